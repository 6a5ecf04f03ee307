"""Shared fixtures: a small synthetic catalogue and the shared real datasets (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def synth_dump(tmp_path_factory) -> Path:
    """A 120-product synthetic catalogue, made once per test session."""
    from catalogues.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), 120, seed=7, progress=False)


@pytest.fixture(scope="session")
def clothing_dir() -> Path:
    path = SHARED / "clothing"
    if not (path / "images.csv").is_file():
        pytest.skip(f"shared clothing photos not found at {path}")
    return path


@pytest.fixture(scope="session")
def ccp_dir() -> Path:
    path = SHARED / "ccp"
    if not (path / "annotations.jsonl").is_file():
        pytest.skip(f"shared ccp photos not found at {path}")
    return path
