"""``fashion-search demo``: the whole pipeline on the synthetic catalogue, cached between runs.

Steps, each skipped when its output is already in the cache folder:
synthetic catalogue -> attribute model -> detector -> appearance model -> index -> serve.
A step that fails leaves the earlier steps' outputs in place, so the next run resumes there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def _step(name: str, done: bool, run) -> None:
    if done:
        print(f"[demo] {name}: cached")
        return
    t0 = time.perf_counter()
    print(f"[demo] {name}: building ...", flush=True)
    run()
    print(f"[demo] {name}: done in {time.perf_counter() - t0:.0f}s", flush=True)


def prepare(home: Path, *, n: int = 2000, seed: int = 0, progress: bool = True) -> Path:
    """Build (or reuse) everything the demo serves; returns the index directory."""
    from appearance.train import AppearanceTrainConfig, train_appearance
    from attributes.train import AttributeTrainConfig, train_attributes
    from catalogues.synth import synthesize
    from detector.train import DetectorTrainConfig, train_detector

    home.mkdir(parents=True, exist_ok=True)
    catalogue, models, index = home / "catalogue", home / "models", home / "index"
    dump = catalogue / "products.jsonl"
    _step("synthetic catalogue", dump.is_file(), lambda: synthesize(catalogue, n, seed, progress=progress))
    _step(
        "attribute model",
        (models / "attributes.pt").is_file(),
        lambda: train_attributes(dump, models, config=AttributeTrainConfig.demo(), progress=progress),
    )
    _step(
        "detector",
        (models / "detector.pt").is_file(),
        lambda: train_detector(dump, models, config=DetectorTrainConfig.demo(), progress=progress),
    )
    _step(
        "appearance model",
        (models / "appearance.pt").is_file(),
        lambda: train_appearance(dump, models, config=AppearanceTrainConfig.demo(), progress=progress),
    )
    _step("index", (index / "DONE").is_file(), lambda: _index(dump, models, index, progress))
    return index


def _index(dump: Path, models: Path, index: Path, progress: bool) -> None:
    from indexer.bulk import BulkConfig, build_index
    from search.engine import load_ram_index

    build_index(dump, models, index, BulkConfig(progress=progress))
    load_ram_index(index)  # the RAM snapshot, written at index time
    (index / "DONE").write_text("built\n")


def run_demo(home: Path, n: int, seed: int, *, host: str = "127.0.0.1", port: int = 8000) -> int:
    from webui.serving import ServeConfig, serve

    t0 = time.perf_counter()
    index = prepare(home, n=n, seed=seed)
    print(f"[demo] ready in {time.perf_counter() - t0:.0f}s")
    serve(index, config=ServeConfig(host=host, port=port))
    return 0
