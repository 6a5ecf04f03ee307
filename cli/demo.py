"""``fashion-search demo``: the whole pipeline on the synthetic catalogue, cached between runs.

Steps, each skipped when its output is already in the cache folder:
synthetic catalogue -> example photos -> the three models -> index -> serve. A step that fails
leaves the earlier steps' outputs in place, so the next run resumes there.

The attribute model trains in a process of its own, on one thread, beside the detector and then the
appearance model here on the other: the detector's training step barely gains from a second
thread (0.46 -> 0.40 s at batch 8 on this 2-core CPU; the attribute model's 0.78 -> 0.46 s), so
side by side the two take less wall time than one after the other with both threads each.

The example photos (``HOME/examples``) are outfits of 2-3 garments drawn like the catalogue's but
from another random stream, so none is a catalogue photo; the page offers them under "Try an
example", and a click searches one in auto mode: every garment found outlined, each searched.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# 1,700 products: a fresh clone serves within 5 minutes on a 2-core CPU (2,000 took 316 s)
DEMO_PRODUCTS = 1700
EXAMPLES = "examples"  # the example photos' folder under the demo's home
EXAMPLE_COUNT = 4
EXAMPLE_STREAM = 0xE8A  # an example's random stream is [this, seed, i]; a catalogue photo's is [seed, i]
# what an example outfit is made of (catalogues.synth draws each of these categories)
TOPS = ("t-shirt", "longsleeve", "shirt", "jacket")
BOTTOMS = ("pants", "shorts", "skirt")
EXTRAS = ("shoes", "bag", "hat")


def _step(name: str, done: bool, run) -> None:
    if done:
        print(f"[demo] {name}: cached")
        return
    t0 = time.perf_counter()
    print(f"[demo] {name}: building ...", flush=True)
    run()
    print(f"[demo] {name}: done in {time.perf_counter() - t0:.0f}s", flush=True)


def prepare(home: Path, *, n: int = DEMO_PRODUCTS, seed: int = 0, progress: bool = True) -> Path:
    """Build (or reuse) everything the demo serves; returns the index directory."""
    from appearance.train import AppearanceTrainConfig, train_appearance
    from attributes.train import AttributeTrainConfig, train_attributes
    from catalogues.synth import synthesize
    from detector.train import DetectorTrainConfig, train_detector
    from webui.examples import MANIFEST

    home.mkdir(parents=True, exist_ok=True)
    catalogue, models, index = home / "catalogue", home / "models", home / "index"
    dump = catalogue / "products.jsonl"
    _step("synthetic catalogue", dump.is_file(), lambda: synthesize(catalogue, n, seed, progress=progress))
    _step(
        "example photos",
        (home / EXAMPLES / MANIFEST).is_file(),
        lambda: write_examples(home / EXAMPLES, EXAMPLE_COUNT, seed),
    )
    with _beside(
        "attribute model",
        (models / "attributes.pt").is_file(),
        train_attributes,
        (dump, models),
        dict(config=AttributeTrainConfig.demo(threads=1), progress=False),
    ):
        _step(
            "detector",
            (models / "detector.pt").is_file(),
            lambda: train_detector(dump, models, config=DetectorTrainConfig.demo(threads=1), progress=progress),
        )
        _step(
            "appearance model",
            (models / "appearance.pt").is_file(),
            lambda: train_appearance(dump, models, config=AppearanceTrainConfig.demo(threads=1), progress=progress),
        )
    _step("index", (index / "DONE").is_file(), lambda: _index(dump, models, index, progress))
    return index


@contextlib.contextmanager
def _beside(name: str, done: bool, fn, args: tuple, kwargs: dict) -> Iterator[None]:
    """Run ``fn(*args, **kwargs)`` in a child process while the block runs; then wait for it (its
    error, if any, raised here once the block's own steps are saved)."""
    if done:
        print(f"[demo] {name}: cached")
        yield
        return
    t0 = time.perf_counter()
    print(f"[demo] {name}: building in a second process ...", flush=True)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state forked
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        job = pool.submit(fn, *args, **kwargs)
        yield
        if not job.done():
            print(f"[demo] {name}: waiting for it ...", flush=True)
        job.result()
    print(f"[demo] {name}: done in {time.perf_counter() - t0:.0f}s", flush=True)


def _outfit(i: int, rng) -> list[str]:
    """What example ``i`` wears: a top, a bottom and an accessory; a dress and an accessory; a top and
    a bottom (in turn, so a few examples show each)."""
    top, bottom, extra = (str(rng.choice(kinds)) for kinds in (TOPS, BOTTOMS, EXTRAS))
    if i % 2 == 0:
        return [top, bottom, extra]
    return ["dress", extra] if i % 4 == 1 else [top, bottom]


def write_examples(folder: Path, n: int = EXAMPLE_COUNT, seed: int = 0) -> Path:
    """Draw ``n`` outfit scenes into ``folder`` as ``outfit-1.jpg``... and list them, with their
    garments' categories and boxes, in ``examples.json`` (written last: ``webui.examples``)."""
    import numpy as np

    from catalogues.synth import draw_scene
    from foundation.schema import default_schema
    from webui.examples import write_manifest

    if n < 1:
        raise ValueError(f"the demo needs at least 1 example photo, got {n}")
    folder.mkdir(parents=True, exist_ok=True)
    schema, rows = default_schema(), []
    for i in range(n):
        rng = np.random.default_rng([EXAMPLE_STREAM, seed, i])
        image, garments = draw_scene(_outfit(i, rng), schema, rng)
        name = f"outfit-{i + 1}.jpg"
        image.save(folder / name, quality=92)
        rows.append(
            {
                "image": name,
                "categories": [g.category for g in garments],
                "boxes": [[*g.box, g.category] for g in garments],
            }
        )
    return write_manifest(folder, rows)


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
    print(
        f"[demo] ready in {time.perf_counter() - t0:.0f}s. Open the page at the address below and click a photo "
        'under "Try an example": every garment found in it is outlined and searched; click one to see its results.',
        flush=True,
    )
    serve(index, config=ServeConfig(host=host, port=port, examples=home / EXAMPLES))
    return 0
