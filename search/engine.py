"""The query engine: a photo and one of three options in, similar products out.

Options:
    auto       the attribute model decides which garment is meant (its most likely category);
    guided     the shopper picks the fashion category;
    rectangle  the shopper draws a box around the garment.

Every option goes through the indexer's ``describe_items()``, the same code path that indexed
the catalogue (the photo oriented, shrunk to the working size and checked before any model
runs), then through the in-RAM inverted index (``search.index``). The engine opens an index
directory written by ``fashion-search index`` and needs nothing else.

Filters and edits (``search.narrowing``): each ``group=value`` is a hard key of the index in every
searched category it applies to, and replaces the description's own value in the ranking's
shared-attribute term; a colour also replaces the photo's colour histogram by that colour's
(``indexer.colour.swatch_histogram`` of the schema's swatches). The description is kept for a
while under ``query.id`` (``search.recent``), so ``rerun`` edits a query without the photo.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foundation.boxes import parse_box
from foundation.dump import MAX_PHOTOS
from foundation.echo import echo
from foundation.schema import Schema, default_schema
from indexer.colour import swatch_histogram
from indexer.describe import Item, describe_items
from indexer.prepare import prepare_image
from indexer.products import add_products, product_from_fields
from search.gate import Gate
from search.hedge import hedge_categories
from search.index import InvertedIndex, RankingConfig, photo_key
from search.narrowing import check_filters, check_offset, check_price_range, narrowed_keys
from search.protocol import SearchIndex, UnknownQuery
from search.ram import index_rows, load_ram_index, ram_from_store
from search.recent import RecentQueries

logger = logging.getLogger(__name__)

OPTIONS = ("auto", "guided", "rectangle")
MAX_K = 200


def check_option(option: str) -> str:
    if option not in OPTIONS:
        raise ValueError(f"unknown option {option!r}; use one of {', '.join(OPTIONS)}")
    return option


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return int(k)


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _attributes_of(desc) -> dict[str, str]:
    return {g: v for g, (v, _p) in desc.attributes.items()}


@dataclass(frozen=True)
class Described:
    """What a search learnt of its photo: kept under the query's id for re-runs."""

    option: str
    descs: list  # one Description per searched category, the query's own first
    hedge: list[tuple[str, float]]  # the categories searched and their probability
    same: list[str]  # products whose photo has the very bytes of the query's


class SearchEngine:
    """Describer + store + RAM index, loaded once; ``search`` is safe to call from many threads."""

    def __init__(
        self,
        *,
        describer,
        store,
        index: InvertedIndex | SearchIndex,
        schema: Schema | None = None,
        recent: RecentQueries | None = None,
        ranking: RankingConfig | None = None,
    ):
        self.describer = describer
        self.store = store
        self.index = index
        saved = getattr(getattr(describer, "coder", None), "ranking", None)  # chosen for its kind of code
        if ranking is not None or saved:
            index.ranking = ranking or RankingConfig(**{**index.ranking.__dict__, **saved})
        self.schema = schema or default_schema()
        self.recent = recent or RecentQueries()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()  # guards the RAM index while it is being changed
        self._models = Gate()  # describes share it; loading new models closes it
        self._swatches: dict[str, np.ndarray] = {}
        self._built = store.built()  # the bulk run the RAM index holds
        self.reloads: list[dict] = []  # the latest swaps of the RAM index (refresh)

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        *,
        device: str = "cpu",
        ranking: RankingConfig | None = None,
        writable: bool = True,
    ) -> SearchEngine:
        """The engine over an index directory; ``writable=False`` opens the store read-only (a
        server without an admin token never writes, so it can serve an index it may not change)."""
        from indexer.describe import Describer
        from indexer.store import Store

        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise FileNotFoundError(f"no index at {index_dir}: build one with `fashion-search index`")
        t0 = time.perf_counter()
        index = load_ram_index(index_dir, ranking=ranking)
        store = Store(index_dir, readonly=not writable)
        describer = Describer.load(store.models_dir(), device=device)
        logger.info("opened %s: %d products in %.1fs", index_dir, len(index), time.perf_counter() - t0)
        return cls(describer=describer, store=store, index=index, ranking=ranking)

    def __len__(self) -> int:
        return len(self.index)

    def categories(self) -> list[str]:
        return list(self.schema.category_names)

    # -- search ---------------------------------------------------------------------------
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
        """Search with a photo (its bytes as sent, or a decoded image) and one of the three options.

        ``box`` is ``x0,y0,x1,y1`` in the upright photo's own pixels; ``filters`` (group -> value),
        the price range and ``offset`` narrow and page the results (module docstring).
        """
        check_option(option)
        k = check_k(k)
        narrowing = self._narrowing(filters, price_min, price_max, offset)
        guide = None
        if option == "guided":
            if not category:
                raise ValueError("the guided option needs a category")
            guide = self.schema.check_category(category)
        elif option == "rectangle":
            if box is None:
                raise ValueError("the rectangle option needs a box x0,y0,x1,y1")
            if category:
                guide = self.schema.check_category(category)
        t0 = time.perf_counter()
        prepared = prepare_image(image, thumbnail=False)
        roi_box = parse_box(box, prepared.original_size) if option == "rectangle" else None
        with self._models.shared():
            (described,) = describe_items(self.describer, [Item(prepared, category=guide, box=roi_box)])
            desc = described.description
            # where the model picks the category (auto, or a rectangle drawn without one) it hedges:
            # the other likely categories are described (auto: their own ROI) and searched too
            hedge = (
                hedge_categories(desc.categories, self.schema.great_category)
                if guide is None
                else [(desc.category, 1.0)]
            )
            descs = [desc]
            extra = [c for c, _p in hedge if c != desc.category]
            if extra:
                items = [Item(prepared, category=c, box=roi_box) for c in extra]
                descs += [d.description for d in describe_items(self.describer, items)]
        with self._read_lock:
            same = [pid for pid, _c in self.index.same_photo(photo_key(prepared.image_hash))]
        query = Described(option, descs, hedge, same)
        timings = dict(desc.timings_ms)
        timings["describe"] = round((time.perf_counter() - t0) * 1e3, 2)
        return self._answer(self.recent.put(query), query, k, *narrowing, timings, t0)

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
        """The search ``query_id`` named, again, with these filters, price range and page: no photo,
        no model. ``UnknownQuery`` when the id is unknown or has expired."""
        k = check_k(k)
        narrowing = self._narrowing(filters, price_min, price_max, offset)
        t0 = time.perf_counter()
        query = self.recent.get(query_id)
        if query is None:
            minutes = f"{self.recent.ttl_s / 60:g}"
            raise UnknownQuery(
                f"query id {echo(query_id)} is unknown or has expired (a query is kept {minutes} minutes "
                "after its last use): search with the photo again"
            )
        return self._answer(query_id, query, k, *narrowing, {"describe": 0.0}, t0)

    def _narrowing(self, filters, price_min, price_max, offset) -> tuple:
        lo, hi = check_price_range(price_min, price_max)
        return check_filters(filters, self.schema), lo, hi, check_offset(offset)

    def _colour_of(self, name: str, photo_colour: np.ndarray) -> np.ndarray:
        """The histogram of a colour name (the schema's swatches, binned as the index's colours)."""
        if name not in self._swatches:
            shades = self.schema.colour_swatches.get(name)
            cfg = getattr(self.describer, "colour", None)
            if not shades or cfg is None or cfg.bins != self.index.colour_bins:
                logger.warning("no histogram for colour %r: the photo's colour is kept", name)
                return photo_colour
            self._swatches[name] = swatch_histogram(shades, cfg)
        return self._swatches[name]

    def _answer(self, query_id: str, query: Described, k, filters, price_min, price_max, offset, timings, t0) -> dict:
        """Search the index with a described query, narrowed and paged, and say how (openapi.json)."""
        t1 = time.perf_counter()
        desc = query.descs[0]
        runs, unused = [], set()
        for d in query.descs:
            hard = {g: v for g, v in filters.items() if self.schema.applies(g, d.category)}
            unused |= {f"{g}={v}" for g, v in filters.items() if g not in hard}
            attributes = {**_attributes_of(d), **hard}
            colour = self._colour_of(filters["colour"], d.colour) if "colour" in hard else d.colour
            runs.append((d, hard, attributes, colour))
        depth = offset + k + 1  # one more than the page: is there another page?
        with self._read_lock:
            results = [
                self.index.search(
                    d.code, c, d.category, a, k=depth, filters=h, price_min=price_min, price_max=price_max
                )
                for d, h, a, c in runs
            ]
            _d, hard0, attrs0, colour0 = runs[0]
            pinned = (
                self.index.hits_for(
                    query.same, desc.code, colour0, attrs0, filters=filters, price_min=price_min, price_max=price_max
                )
                if query.same
                else []
            )
        merged = sorted((h for r in results for h in r.hits), key=lambda h: (h.tier, h.score, h.id))
        seen: set[str] = set()
        ranked = [h for h in [*pinned, *merged] if not (h.id in seen or seen.add(h.id))]
        page = ranked[offset : offset + k]
        notes = [r.note for r in results if r.note]
        if pinned:
            notes.insert(0, f"the same photo as product {pinned[0].id!r}")
        used = {f"{g}={v}" for _d, h, _a, _c in runs for g, v in h.items()}
        for key in sorted(unused - used):
            notes.append(f"{key} does not apply to {', '.join(c for c, _p in query.hedge)}: not used")
        t2 = time.perf_counter()
        hits = []
        for h in page:
            meta = self.store.metadata(h.id) or {}
            hits.append(
                {
                    "id": h.id,
                    "title": meta.get("title", ""),
                    "category": meta.get("category", desc.category),
                    "score": h.score,
                    "hamming": h.hamming,
                    "colour_distance": h.colour_distance,
                    "shared_attributes": list(h.shared_attributes),
                    "attributes": dict(h.attributes),
                    "price": meta.get("price"),
                    "url": meta.get("url"),
                    "photo": h.photo,
                }
            )
        timings["search"] = round((t2 - t1) * 1e3, 2)
        timings["total"] = round((time.perf_counter() - t0) * 1e3, 2)
        edited = {g: v for g, v in filters.items()}
        attributes = [
            {"group": g, "value": v, "p": round(float(p), 4)}
            for g, (v, p) in desc.attributes.items()
            if g not in edited
        ]
        attributes += [{"group": g, "value": v, "p": 1.0, "edited": True} for g, v in edited.items()]
        order = [g.name for g in self.schema.groups]
        attributes.sort(key=lambda a: order.index(a["group"]) if a["group"] in order else len(order))
        return {
            "query": {
                "id": query_id,
                "option": query.option,
                "category": desc.category,
                "categories": [{"category": c, "p": round(float(p), 4)} for c, p in desc.categories],
                "attributes": attributes,
                "roi": [int(round(v)) for v in desc.roi],
                "fallback": bool(desc.fallback),
                "searched": [{"category": c, "p": round(float(p), 4)} for c, p in query.hedge],
                "candidates": sum(r.candidates for r in results),
                "filters": [key for key in narrowed_keys(filters, price_min, price_max) if key not in unused - used],
                "offset": offset,
                "more": len(ranked) > offset + k,
                "note": "; ".join(notes) or None,
                "timings_ms": timings,
            },
            "results": hits,
        }

    # -- products -------------------------------------------------------------------------
    def product(self, product_id: str) -> dict | None:
        return self.store.metadata(product_id)

    def thumbnail(self, product_id: str, photo: int = 0) -> bytes | None:
        return self.store.thumbnail(product_id, photo)

    def add(self, product: dict, image: bytes | Image.Image | Sequence[bytes | Image.Image]) -> dict:
        """Describe, store and index one product (its photo's bytes as sent, or a list of its photos,
        identical ones kept once); replaces one with the same id."""
        if self.store.readonly:
            raise PermissionError("this index is served read-only: start the server with a token to change it")
        item = product_from_fields(product)
        photos = list(image) if isinstance(image, (list, tuple)) else [image]
        if not 1 <= len(photos) <= MAX_PHOTOS:
            raise ValueError(f"a product takes 1 to {MAX_PHOTOS} photos, got {len(photos)}")
        prepared = []
        for n, photo in enumerate(photos):  # a bad photo is refused before the write lock is taken
            try:
                p = prepare_image(photo)
            except ValueError as exc:
                raise type(exc)(f"photo {n}: {exc}" if len(photos) > 1 else str(exc)) from exc
            if all(p.image_hash != q.image_hash for q in prepared):
                prepared.append(p)
        with self._write_lock:
            with self._models.shared():
                (record,) = add_products(self.store, self.describer, [(item, prepared)])
            with self._read_lock:
                index_rows(self.index, [record])
            return self.store.metadata(record.id)

    def delete(self, product_id: str) -> bool:
        with self._write_lock:
            found = self.store.delete([product_id]) > 0
            with self._read_lock:
                self.index.delete([product_id])
            return found

    # -- live re-indexing -------------------------------------------------------------------
    def refresh(self) -> dict | None:
        """Load the index anew when a bulk run into its directory has finished since it was loaded.

        The new RAM index is built beside the old one from one read snapshot of the store, then
        swapped in under the read lock: a search runs on the old index or the new one, never on a
        half-built one, and never fails for the swap. Product updates through the API wait for it.
        Models changed by the run are loaded too. Returns what was swapped, or None.
        """
        if not isinstance(self.index, InvertedIndex) or self.store.built() == self._built:
            return None  # another backend (search.milvus) is loaded by `export milvus` instead
        t0 = time.perf_counter()
        with self._write_lock:
            built = self.store.built()
            ram = ram_from_store(self.store, schema=self.schema, ranking=self.index.ranking)
            describer, signature = self.describer, self.store.info().get("models_signature")
            if signature and getattr(describer, "signature", None) and signature != describer.signature:
                from indexer.describe import Describer

                with self._models.exclusive():  # searches wait while it loads (search.gate)
                    describer = Describer.load(self.store.models_dir(), device=getattr(describer, "device", "cpu"))
            t1 = time.perf_counter()
            changed = describer is not self.describer
            with self._read_lock:
                old, self.index, self._built = self.index, ram, built
                if changed:
                    self.describer, self._swatches = describer, {}
                    self.recent.clear()  # their codes are of the old models
            swap_ms = (time.perf_counter() - t1) * 1e3
        done = {
            "built": built,
            "products": len(ram),
            "photos": ram.photo_count(),
            "was": len(old),
            "models_changed": changed,
            "load_s": round(t1 - t0, 3),
            "swap_ms": round(swap_ms, 3),
            "at": time.time(),
        }
        self.reloads = [*self.reloads[-9:], done]
        logger.info("re-loaded the index: %d products (was %d) in %.2fs", len(ram), len(old), t1 - t0)
        return done

    def index_status(self) -> dict:
        """The index being served and the bulk run into its directory, as ``progress.json`` says."""
        progress = self.store.progress()
        if progress and progress.get("state") == "running" and not _alive(progress.get("pid")):
            progress = {**progress, "state": "stopped"}  # killed: a re-run resumes it
        return {
            "products": len(self.index),
            "photos": self.index.photo_count(),
            "built": self._built,
            "reloads": self.reloads[-3:],
            "indexing": progress,
        }

    def stats(self) -> dict:
        return {
            "products": len(self.index),
            "categories": self.index.category_sizes(),
            "code_bits": self.index.code_bytes * 8,
            "colour_bins": self.index.colour_bins,
            "ranking": self.index.ranking.__dict__,
        }
