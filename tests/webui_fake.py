"""A small engine with ``SearchEngine``'s interface, for testing the web layer without models.

It reads a synthetic dump (``catalogues.synth``) and ranks the products of a category by the
distance between tiny colour thumbnails of their garment boxes: enough for results that depend
on the option, the category and the box, so the page can be tested end to end. It never stands
in for the real engine in a figure.

``standin_engine`` builds the real ``SearchEngine`` (LMDB store, RAM index, describe()) over a
small index instead, with the indexer tests' stand-ins for the attribute model and the detector
and an average hash for the appearance code: the real serving path without trained models.

Run as a server for the browser test and the load test:
    python -m tests.webui_fake DUMP [--port 8000] [--token T] [--standin INDEX_DIR [--n N]]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from foundation.schema import Schema, default_schema
from foundation.text import category_from_text
from indexer.prepare import prepare_image
from indexer.products import product_from_fields
from search.engine import check_k, check_option, parse_box
from search.narrowing import check_filters, check_offset, check_price_range, narrowed_keys
from search.protocol import Engine, UnknownQuery
from search.recent import RecentQueries

FEATURE = 6  # side of the colour thumbnail compared


def _feature(image: Image.Image, box=None) -> np.ndarray:
    crop = image.crop(tuple(int(round(v)) for v in box)) if box is not None else image
    return np.asarray(crop.resize((FEATURE, FEATURE), Image.BILINEAR), np.float32).reshape(-1) / 255.0


def _thumbnail(image: Image.Image) -> bytes:
    im = image.copy()
    im.thumbnail((256, 256))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=85)
    return out.getvalue()


class FakeEngine:
    """A ``search.protocol.Engine``: ``SearchEngine``'s methods with its signatures (tests check both)."""

    def __init__(self, dump: str | Path, *, schema: Schema | None = None):
        self.schema = schema or default_schema()
        self._lock = threading.Lock()
        self._products: dict[str, dict] = {}
        self.recent = RecentQueries()
        dump = Path(dump)
        for line in dump.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            image = Image.open(dump.parent / row["image"]).convert("RGB")
            attributes = dict(row["attributes"])
            box = next(b[:4] for b in row["boxes"] if b[4] == attributes["category"])
            self._put(row, attributes, image, box)

    def copy(self) -> FakeEngine:
        twin = object.__new__(FakeEngine)
        twin.schema, twin._lock, twin._products = self.schema, threading.Lock(), dict(self._products)
        twin.recent = RecentQueries()
        return twin

    def _put(self, row: dict, attributes: dict, image: Image.Image, box, thumbnail: bytes | None = None) -> dict:
        meta = {
            "id": row["id"],
            "title": row.get("title", ""),
            "category": attributes["category"],
            "category_path": row.get("category_path", ""),
            "price": row.get("price"),
            "url": row.get("url"),
        }
        entry = {
            "meta": meta,
            "attributes": attributes,
            "box": list(box),
            "size": image.size,
            "whole": _feature(image),
            "crop": _feature(image, box),
            "thumbnail": thumbnail or _thumbnail(image),
        }
        with self._lock:
            self._products[row["id"]] = entry
        return meta

    def _entries(self) -> list[dict]:
        with self._lock:
            return list(self._products.values())

    # -- search.protocol.Engine --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._products)

    def categories(self) -> list[str]:
        return list(self.schema.category_names)

    def search(
        self,
        image: bytes | Path | Image.Image,
        option: str,
        *,
        category: str | None = None,
        box=None,
        k: int = 20,
        filters: Mapping[str, str] | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        offset: int = 0,
    ) -> dict:
        check_option(option)
        k = check_k(k)
        narrowing = (
            check_filters(filters, self.schema),
            *check_price_range(price_min, price_max),
            check_offset(offset),
        )
        if category is not None:
            self.schema.check_category(category)
        entries = self._entries()
        if option == "guided" and category is None:
            raise ValueError("the guided option needs a category")
        if option == "rectangle" and box is None:
            raise ValueError("the rectangle option needs a box x0,y0,x1,y1")
        prepared = prepare_image(image, thumbnail=False)  # the engine's own decoding and checks
        picture = prepared.image
        if option == "rectangle":
            roi = parse_box(box, prepared.original_size)
            query = _feature(picture, prepared.to_working(roi))
            pool = [e for e in entries if category is None or e["meta"]["category"] == category] or entries
            seen = min(pool, key=lambda e: float(np.abs(e["crop"] - query).sum()))
        else:
            # The "recognised" garment: the catalogue photo nearest to the query, its box rescaled.
            whole = _feature(picture)
            pool = [e for e in entries if category is None or e["meta"]["category"] == category] or entries
            seen = min(pool, key=lambda e: float(np.abs(e["whole"] - whole).sum()))
            sx, sy = picture.size[0] / seen["size"][0], picture.size[1] / seen["size"][1]
            b = seen["box"]
            working = (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)
            query = _feature(picture, working)
            roi = prepared.to_original(working)
        cat = category or seen["meta"]["category"]
        attributes = {**seen["attributes"], "category": cat, "great_category": self.schema.great_category(cat)}
        described = {"option": option, "category": cat, "p": 1.0 if category else 0.8, "query": query}
        described |= {"attributes": attributes, "roi": [int(round(v)) for v in roi]}
        return self._answer(self.recent.put(described), described, k, *narrowing)

    def rerun(
        self,
        query_id: str,
        *,
        k: int = 20,
        filters: Mapping[str, str] | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        offset: int = 0,
    ) -> dict:
        k = check_k(k)
        narrowing = (
            check_filters(filters, self.schema),
            *check_price_range(price_min, price_max),
            check_offset(offset),
        )
        described = self.recent.get(query_id)
        if described is None:
            raise UnknownQuery(f"query id {query_id!r} is unknown or has expired: search with the photo again")
        return self._answer(query_id, described, k, *narrowing)

    def _answer(self, query_id, described, k, filters, price_min, price_max, offset) -> dict:
        cat, query = described["category"], described["query"]
        hard = {g: v for g, v in filters.items() if self.schema.applies(g, cat)}
        attributes = {**described["attributes"], **hard}
        hits = []
        for e in self._entries():
            price = e["meta"]["price"]
            if e["meta"]["category"] != cat or any(e["attributes"].get(g) != v for g, v in hard.items()):
                continue
            if (price_min is not None or price_max is not None) and price is None:
                continue
            if (price_min is not None and price < price_min) or (price_max is not None and price > price_max):
                continue
            distance = float(np.abs(e["crop"] - query).mean())
            shared = [
                f"{g}={v}"
                for g, v in attributes.items()
                if g not in ("category", "great_category") and e["attributes"].get(g) == v
            ]
            own = {g.name: e["attributes"][g.name] for g in self.schema.attribute_groups if g.name in e["attributes"]}
            hits.append(
                {
                    **{f: e["meta"][f] for f in ("id", "title", "category", "price", "url")},
                    "score": round(distance - 0.05 * len(shared), 6),
                    "hamming": int(distance * 512),
                    "colour_distance": round(distance, 6),
                    "shared_attributes": shared,
                    "attributes": own,
                }
            )
        hits.sort(key=lambda h: (h["score"], h["id"]))
        groups = [g.name for g in self.schema.groups]
        p = described["p"]
        return {
            "query": {
                "id": query_id,
                "option": described["option"],
                "category": cat,
                "categories": [{"category": cat, "p": p}],
                "attributes": [
                    {"group": g, "value": attributes[g], "p": 1.0 if g in hard else 0.9}
                    | ({"edited": True} if g in hard else {})
                    for g in groups
                    if g in attributes
                ],
                "roi": described["roi"],
                "fallback": False,
                "searched": [{"category": cat, "p": p}],
                "filters": narrowed_keys(hard, price_min, price_max),
                "offset": offset,
                "more": len(hits) > offset + k,
                "note": None,
                "timings_ms": {"total": 1.0},
            },
            "results": hits[offset : offset + k],
        }

    def product(self, product_id: str) -> dict | None:
        with self._lock:
            entry = self._products.get(product_id)
        return dict(entry["meta"]) if entry else None

    def thumbnail(self, product_id: str, photo: int = 0) -> bytes | None:
        with self._lock:
            entry = self._products.get(product_id)
        return entry["thumbnail"] if entry and photo == 0 else None

    def add(self, product: dict, image: bytes | Image.Image | Sequence[bytes | Image.Image]) -> dict:
        item = product_from_fields(product, self.schema)  # the engine's own rules for the fields
        prepared = prepare_image(image[0] if isinstance(image, (list, tuple)) else image)  # the first photo only
        category = item.category or category_from_text(item.category_path, item.title, schema=self.schema)
        if category is None:
            raise ValueError(f"product {item.id!r}: no fashion category in its title or category_path")
        row = {"id": item.id, "title": item.title, "category_path": item.category_path, "price": item.price}
        w, h = prepared.image.size
        return self._put(
            {**row, "url": item.url}, {"category": category}, prepared.image, (0, 0, w, h), prepared.thumbnail
        )

    def delete(self, product_id: str) -> bool:
        with self._lock:
            return self._products.pop(product_id, None) is not None

    def refresh(self) -> dict | None:
        return None  # built in memory from a dump: there is no index directory to re-index

    def index_status(self) -> dict:
        return {"products": len(self), "photos": len(self), "built": 0, "reloads": [], "indexing": None}

    def stats(self) -> dict:
        counts: dict[str, int] = {}
        for e in self._entries():
            counts[e["meta"]["category"]] = counts.get(e["meta"]["category"], 0) + 1
        return {"products": len(self), "categories": dict(sorted(counts.items()))}


class HashCoder:
    """Stands in for the appearance coder: bits of a 16x16 grey thumbnail above its mean."""

    code_bytes = 32

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
    """The real SearchEngine over an index directory written by ``build_standin_index``."""
    from indexer.store import Store
    from search.engine import SearchEngine, load_ram_index

    index = load_ram_index(index_dir)  # before the store opens: LMDB opens an environment once per process
    return SearchEngine(describer=describer, store=Store(index_dir, readonly=False), index=index)


def standin_engine(dump: str | Path, out: str | Path, *, n: int | None = None):
    """The real SearchEngine over the first ``n`` products of ``dump``, indexed into ``out`` with stand-ins."""
    describer = standin_describer()
    return open_standin_engine(build_standin_index(dump, out, describer, n=n), describer)


def main(argv: list[str] | None = None) -> int:
    from webui.app import create_app
    from webui.serving import ServeConfig, serve_app

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dump")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--standin", type=Path, help="serve the real engine with model stand-ins, indexed into this folder")
    p.add_argument("--n", type=int, help="with --standin: index the first N products only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine: Engine = standin_engine(args.dump, args.standin, n=args.n) if args.standin else FakeEngine(args.dump)
    app = create_app({"ENGINE": engine, "TOKEN": args.token})
    serve_app(app, ServeConfig(host=args.host, port=args.port, threads=args.threads, token=args.token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
