"""``fashion-search demo``: the whole pipeline on the synthetic catalogue, cached between runs.

Steps, each skipped when its output is already in the cache folder:
synthetic catalogue -> example photos -> attribute model -> detector -> appearance model -> index
-> serve. A step that fails leaves the earlier steps' outputs in place, so the next run resumes there.

The example photos (``HOME/examples``) are outfits of 2-3 garments drawn like the catalogue's but
from another random stream, so none is a catalogue photo; the page offers them under "Try an
example", and a click searches one in auto mode: every garment found outlined, each searched.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

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


def prepare(home: Path, *, n: int = 2000, seed: int = 0, progress: bool = True) -> Path:
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
