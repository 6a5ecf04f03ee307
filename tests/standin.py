"""The real ``SearchEngine`` over a small index, with stand-ins for the trained models.

``standin_engine`` builds the real engine (LMDB store, RAM index, describe()) over the first
products of a synthetic dump (``catalogues.synth``), with the indexer tests' stand-ins for the
attribute model and the detector (``tests/indexer_fakes.py``) and an average hash for the
appearance code: the real serving path without trained models. The stand-in attribute model
sees a category only, no attribute; ``label_like_the_catalogue`` gives the index the
catalogue's own labels, as a perfect attribute model would have filled it.

This is the one place the tests and benchmarks build an engine on stand-ins: the engine-facing
code is kept here, and small.

Run as a server for the browser test, the fuzz test and the load tests:
    python -m tests.standin DUMP INDEX_DIR [--n N] [--labelled] [--port 8000] [--token T]
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

import numpy as np
from PIL import Image

NOT_LABELS = ("category", "great_category")  # the catalogue's labels that are no attribute filter


class HashCoder:
    """Stands in for the appearance coder: bits of a 16x16 grey thumbnail above its mean."""

    code_bytes = 32
    ranking = None  # no weights saved: the search's defaults

    def encode(self, images, *, batch_size: int = 64) -> np.ndarray:
        grey = [np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), np.float32) for im in images]
        return np.stack([np.packbits((g > g.mean()).reshape(-1)) for g in grey])


def standin_describer():
    """The indexer's ``Describer`` with the stand-ins: fake attribute model and detector, average-hash codes."""
    from indexer.describe import Describer
    from tests.indexer_fakes import FakeDetector, FakePredictor

    return Describer(predictor=FakePredictor(), detector=FakeDetector(), coder=HashCoder())


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


def standin_engine(dump: str | Path, out: str | Path, *, n: int | None = None):
    """The real SearchEngine over the first ``n`` products of ``dump``, indexed into ``out`` with stand-ins."""
    describer = standin_describer()
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
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token")
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = standin_engine(args.dump, args.index, n=args.n)
    if args.labelled:
        label_like_the_catalogue(engine, args.dump)
    app = create_app({"ENGINE": engine, "TOKEN": args.token})
    serve_app(app, ServeConfig(host=args.host, port=args.port, threads=args.threads, token=args.token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
