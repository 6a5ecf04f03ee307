"""The model directory: one checkpoint file per model plus ``manifest.json``.

A checkpoint is a dict of state_dicts, the typed config it was built from, the preprocessing
it expects and the schema it was trained on; it is loaded with ``weights_only=True`` and no
module is ever pickled. A model trained on one schema refuses to load with another.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from foundation.schema import Schema, default_schema

MANIFEST = "manifest.json"


class ModelError(ValueError):
    """A model file that is missing, corrupt or made for another schema."""


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (a dump, say), to record what a model was trained on."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_manifest(models_dir: str | Path) -> dict:
    path = Path(models_dir) / MANIFEST
    if not path.is_file():
        return {"models": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def save_model(
    models_dir: str | Path,
    name: str,
    *,
    state_dicts: dict[str, dict],
    config: dict[str, Any],
    preprocessing: dict[str, Any],
    schema: Schema | None = None,
    metrics: dict[str, Any] | None = None,
    data_hash: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``<models_dir>/<name>.pt`` atomically and record it in the manifest."""
    import torch
    import torchvision

    schema = schema or default_schema()
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.pt"
    checkpoint = {
        "name": name,
        "state_dicts": state_dicts,
        "config": config,
        "preprocessing": preprocessing,
        "schema": schema.to_dict(),
        "schema_fingerprint": schema.fingerprint,
        "extra": extra or {},
    }
    _atomic_write_bytes(path, lambda tmp: torch.save(checkpoint, tmp))
    manifest = read_manifest(models_dir)
    manifest["models"][name] = {
        "file": path.name,
        "schema_fingerprint": schema.fingerprint,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "data_hash": data_hash,
        "metrics": metrics or {},
        "config": config,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    _atomic_write_bytes(models_dir / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def load_model(models_dir: str | Path, name: str, *, schema: Schema | None = None) -> dict:
    """The checkpoint dict of model ``name``; a clear error when missing or for another schema."""
    import torch

    schema = schema or default_schema()
    path = Path(models_dir) / f"{name}.pt"
    if not path.is_file():
        raise ModelError(f"no {name} model at {path}: train it with `fashion-search train {name}`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise ModelError(f"cannot read the {name} model {path}: {exc}") from exc
    if checkpoint.get("schema_fingerprint") != schema.fingerprint:
        raise ModelError(
            f"the {name} model {path} was trained on attribute schema {checkpoint.get('schema_fingerprint')}, "
            f"but this schema is {schema.fingerprint} ({schema.source}): retrain it or use the schema it was trained on"
        )
    return checkpoint
