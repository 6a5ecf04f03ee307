"""The real ``SearchEngine`` over a small index, with stand-ins for the trained models.

``standin_engine`` builds the real engine (LMDB store, RAM index, describe()) over the first
products of a synthetic dump (``catalogues.synth``), with the indexer tests' stand-ins for the
attribute model and the detector (``tests/indexer_fakes.py``) and an average hash for the
appearance code: the real serving path without trained models. The stand-in attribute model
sees a category only, no attribute; ``label_like_the_catalogue`` gives the index the
catalogue's own labels, as a perfect attribute model would have filled it.

This is the one place the tests and benchmarks build an engine on stand-ins: the engine-facing
code is kept here, and small.

``CatalogueDetector`` (``--garments``) stands in for a detector that finds every garment of a
catalogue photo: it knows each dump photo's true boxes, so auto answers one garment per box (the
"shop the look" page); other photos hold none, as with the plain stand-in.

Run as a server for the browser test, the fuzz test and the load tests:
    python -m tests.standin DUMP INDEX_DIR [--n N] [--labelled] [--garments] [--port 8000] [--token T]
        [--examples DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from tests.indexer_fakes import FakeDetector, FakePrediction, FakePredictor, FakeROI

NOT_LABELS = ("category", "great_category")  # the catalogue's labels that are no attribute filter


class HashCoder:
    """Stands in for the appearance coder: bits of a 16x16 grey thumbnail above its mean."""

    code_bytes = 32
    ranking = None  # no weights saved: the search's defaults

    def encode(self, images, *, batch_size: int = 64) -> np.ndarray:
        grey = [np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), np.float32) for im in images]
        return np.stack([np.packbits((g > g.mean()).reshape(-1)) for g in grey])


def pixel_hash(image: Image.Image) -> str:
    """A photo's identity by its RGB pixels (not its file's bytes, which an upload may not keep)."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


class CatalogueDetector(FakeDetector):
    """The fake detector that also finds the true garments of each photo of a dump.

    ``raw`` looks the image up by its pixels (``pixel_hash``) and remembers its garments in
    ``found`` (per thread: the server answers searches side by side), which ``garments`` answers:
    one ``FakeROI`` per box of the row, named with its great-category, scored 0.9. The boxes are
    in the file's pixels: the synthetic photos are smaller than the engine's working size, so the
    detector sees the file's own pixels. A photo of no row holds no garment (auto describes the
    whole photo, as with ``FakeDetector``). ``crops`` names each box's crop (by its pixels) with
    the box's category, for ``CataloguePredictor``.
    """

    SCORE = 0.9

    def __init__(self, dump: str | Path):
        from foundation.boxes import pixel_box
        from foundation.dump import read_dump
        from foundation.schema import default_schema

        self._local = threading.local()
        super().__init__()
        great = default_schema().great_category
        self.known: dict[str, list[FakeROI]] = {}
        self.crops: dict[str, str] = {}
        for product in read_dump(dump, check_images=False):
            if not product.boxes:
                continue
            with Image.open(product.photos[0].path) as opened:
                im = opened.convert("RGB")
            self.known[pixel_hash(im)] = [
                FakeROI(tuple(map(float, b[:4])), great(b[4]), self.SCORE) for b in product.boxes
            ]
            for b in product.boxes:
                self.crops[pixel_hash(im.crop(pixel_box(b[:4], im.size)))] = b[4]

    @property
    def found(self) -> list[FakeROI]:
        return getattr(self._local, "found", [])

    @found.setter
    def found(self, rois: list[FakeROI]) -> None:
        self._local.found = rois

    def raw(self, images):
        """The photos' sizes (``FakeDetector``), remembering the garments of the last one (a search's photo)."""
        self.found = list(self.known.get(pixel_hash(images[-1]), [])) if images else []
        return super().raw(images)


class CataloguePredictor(FakePredictor):
    """The fake attribute model that reads a garment's crop found by ``CatalogueDetector`` as its
    true category (as a trained model would); any other photo as ``FakePredictor`` does."""

    def __init__(self, crops: dict[str, str]):
        super().__init__()
        self.crops = crops

    def predict(self, images, guides=None, *, beam=1, features=None):
        out = super().predict(images, guides, beam=beam, features=features)
        for i, im in enumerate(images):
            true = None if guides is not None and guides[i] is not None else self.crops.get(pixel_hash(im))
            if true is not None:
                attrs = {"great_category": (self.schema.great_category(true), 0.99), "category": (true, 0.9)}
                out[i] = FakePrediction(true, attrs, [(true, 0.9)])
        return out


def standin_describer(dump: str | Path | None = None):
    """The indexer's ``Describer`` with the stand-ins: fake attribute model and detector, average-hash
    codes; given a ``dump``, the detector finds its photos' true garments and the attribute model
    reads each as its true category (``CatalogueDetector``, ``CataloguePredictor``)."""
    from indexer.describe import Describer

    if dump is None:
        return Describer(predictor=FakePredictor(), detector=FakeDetector(), coder=HashCoder())
    detector = CatalogueDetector(dump)
    return Describer(predictor=CataloguePredictor(detector.crops), detector=detector, coder=HashCoder())


def build_standin_index(dump: str | Path, out: str | Path, describer, *, n: int | None = None) -> Path:
    """Index the first ``n`` products of ``dump`` into the index directory ``out`` with ``describer``,
    through the indexer's own per-product path (``indexer.products.add_products``)."""
    from foundation.dump import read_dump
    from indexer.products import add_products
    from indexer.store import Store
    from search.engine import load_ram_index

    products = list(itertools.islice(read_dump(dump, check_images=False), n))
    store = Store(out, readonly=False)
    try:
        add_products(store, describer, [(p, p.photos[0].path) for p in products])
        store.write_info({"code_bytes": describer.code_bytes, "colour_bins": int(describer.colour.bins)})
    finally:
        store.close()
    load_ram_index(out)  # writes the RAM snapshot, so each opening of the index is quick
    return Path(out)


def open_standin_engine(index_dir: str | Path, describer):
    """The real SearchEngine over an index directory written by ``build_standin_index``; the caller
    closes it (``engine.close()``, or ``with``)."""
    from indexer.store import Store
    from search.engine import SearchEngine, load_ram_index

    index = load_ram_index(index_dir)  # before the store opens: LMDB opens an environment once per process
    return SearchEngine(describer=describer, store=Store(index_dir, readonly=False), index=index)


def standin_engine(dump: str | Path, out: str | Path, *, n: int | None = None, garments: bool = False):
    """The real SearchEngine over the first ``n`` products of ``dump``, indexed into ``out`` with stand-ins;
    with ``garments``, its models find each dump photo's true garments (``standin_describer``)."""
    describer = standin_describer(dump if garments else None)
    return open_standin_engine(build_standin_index(dump, out, describer, n=n), describer)


def label_like_the_catalogue(engine, dump: str | Path) -> None:
    """Set the attributes of each product in the engine's RAM index to the dump's own labels (the
    stand-in attribute model predicts none), so that filters and edits narrow the results.

    The store keeps what the stand-ins saw; each product's first photo only (``catalogues.synth``
    makes one a product)."""
    from foundation.dump import read_dump
    from search.rows import PhotoRows, photo_key

    labels = {
        p.id: {g: v for g, v in p.attributes.items() if g not in NOT_LABELS}
        for p in read_dump(dump, check_images=False)
    }
    records = list(engine.store.iter_records())
    first = [r.photos[0] for r in records]
    engine.index.add(
        PhotoRows(
            [r.id for r in records],
            [p.description.category for p in first],
            [labels.get(r.id, {}) for r in records],
            np.stack([p.description.code for p in first]),
            np.stack([p.description.colour for p in first]),
            photos=[photo_key(p.image_hash) for p in first],
            prices=[r.price for r in records],
        )
    )


def main(argv: list[str] | None = None) -> int:
    from webui.app import create_app
    from webui.serving import ServeConfig, serve_app

    p = argparse.ArgumentParser(description="Serve the real engine with model stand-ins over a synthetic dump.")
    p.add_argument("dump")
    p.add_argument("index", type=Path, help="the folder to index the dump into (then served)")
    p.add_argument("--n", type=int, help="index the first N products only")
    p.add_argument("--labelled", action="store_true", help="give the index the dump's own attribute labels")
    p.add_argument("--garments", action="store_true", help="find each dump photo's true garments (auto answers each)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--examples", type=Path, help="a folder of example photos the page offers (webui.examples)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = standin_engine(args.dump, args.index, n=args.n, garments=args.garments)
    if args.labelled:
        label_like_the_catalogue(engine, args.dump)
    app = create_app({"ENGINE": engine, "TOKEN": args.token, "EXAMPLES": args.examples})
    serve_app(app, ServeConfig(host=args.host, port=args.port, threads=args.threads, token=args.token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
