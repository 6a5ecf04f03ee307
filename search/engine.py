"""The query engine: a ``Query`` in, an ``Answer`` out; products added and removed one at a time.

A search goes through the indexer's ``describe_query`` (the same models and preparation that
indexed the catalogue: the photo oriented, shrunk to the working size and checked before any
model runs), then each garment's categories are searched in the index (``search.answering``,
ranked by ``search.ranking``). What was described is kept under the answer's query id
(``search.recent``), so a re-run edits the narrowing, or picks another garment, without the photo.
The engine opens an index directory written by ``fashion-search index`` and needs nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from foundation.boxes import parse_box
from foundation.dump import MAX_PHOTOS
from foundation.echo import echo
from foundation.schema import Schema, default_schema
from indexer.describe import Describer, describe_query
from indexer.prepare import prepare_image
from indexer.products import add_products, product_from_fields
from search.answer import Answer
from search.answering import Answerer, Seen, SeenGarment
from search.gate import Gate
from search.index import InvertedIndex
from search.live import LiveIndex
from search.narrowing import Narrowing
from search.protocol import SearchIndex, UnknownQuery
from search.query import Query
from search.ram import index_rows, load_ram_index, ram_from_store
from search.ranking import RankingConfig
from search.recent import RecentQueries
from search.rows import photo_key

logger = logging.getLogger(__name__)

__all__ = ["SearchEngine", "UnknownQuery", "load_ram_index"]


class SearchEngine:
    """Describer + store + index, loaded once; ``search`` is safe to call from many threads.

    Args:
        describer: the models (``indexer.describe.Describer``).
        store: the index directory's store (display fields, thumbnails, product updates).
        index: the RAM index, or another backend (``search.milvus``).
        ranking: the ranking weights; by default those the appearance model was saved with.
    """

    def __init__(
        self,
        *,
        describer: Describer,
        store,
        index: SearchIndex,
        schema: Schema | None = None,
        recent: RecentQueries | None = None,
        ranking: RankingConfig | None = None,
    ):
        self.describer = describer
        self.store = store
        self.schema = schema or default_schema()
        self.ranking = ranking or RankingConfig(**(describer.ranking or {}))  # chosen for its kind of code
        self.recent = recent or RecentQueries()
        self.live = LiveIndex(index, store.built())
        self._answerer = Answerer(self.schema, describer.colour, self.ranking)
        self._write_lock = threading.Lock()
        self._models = Gate()  # describes share it; loading new models closes it

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        *,
        device: str = "cpu",
        ranking: RankingConfig | None = None,
        writable: bool = True,
        runtime: str = "torch",
    ) -> SearchEngine:
        """The engine over an index directory; ``writable=False`` opens the store read-only (a
        server without an admin token never writes, so it can serve an index it may not change);
        ``runtime="onnx"``: the models' CNNs on ONNX Runtime (``indexer.describe.Describer.load``)."""
        from indexer.store import Store

        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise FileNotFoundError(f"no index at {index_dir}: build one with `fashion-search index`")
        t0 = time.perf_counter()
        index = load_ram_index(index_dir)
        store = Store(index_dir, readonly=not writable)
        try:
            describer = Describer.load(store.models_dir(), device=device, runtime=runtime)
        except BaseException:
            store.close()
            raise
        logger.info("opened %s: %d products in %.1fs", index_dir, len(index), time.perf_counter() - t0)
        return cls(describer=describer, store=store, index=index, ranking=ranking)

    def close(self) -> None:
        """Close the store; the engine answers nothing after."""
        self.store.close()

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def index(self) -> SearchIndex:
        return self.live.index

    def __len__(self) -> int:
        return len(self.live.index)

    def categories(self) -> list[str]:
        return list(self.schema.category_names)

    # -- search ---------------------------------------------------------------------------
    def search(self, query: Query) -> Answer:
        """Answer a query: a photo described anew, or a re-run of the one its ``query_id`` names
        (no photo, no model; ``UnknownQuery`` when the id is unknown or has expired)."""
        t0 = time.perf_counter()
        if query.is_rerun:
            query_id, seen, timings = query.query_id, self._recalled(query.query_id), {"describe": 0.0}
        else:
            seen, timings = self._describe(query)
            query_id = self.recent.put(seen)
        if query.garment >= len(seen.garments):
            raise ValueError(f"garment {query.garment} is not in that answer: it offered {len(seen.garments)}")
        t1 = time.perf_counter()
        # the narrowing is the answered garment's; the others are offered at their first page
        narrowings = [
            query.narrowing if n == query.garment else Narrowing(k=query.narrowing.k) for n in range(len(seen.garments))
        ]
        with self.live.reading() as index:
            searched = [
                self._answerer.hits(index, g, seen.same_for(n), narrowings[n]) for n, g in enumerate(seen.garments)
            ]
        t2 = time.perf_counter()
        timings["search"] = round((t2 - t1) * 1e3, 2)
        garments = tuple(
            self._answerer.garment(self.store, g, narrowings[n], searched[n]) for n, g in enumerate(seen.garments)
        )
        timings["answer"] = round((time.perf_counter() - t2) * 1e3, 2)  # the store's display fields
        timings["total"] = round((time.perf_counter() - t0) * 1e3, 2)
        return Answer(query_id, seen.option, query.narrowing, garments, query.garment, timings)

    def _recalled(self, query_id: str) -> Seen:
        seen = self.recent.get(query_id)
        if seen is None:
            minutes = f"{self.recent.ttl_s / 60:g}"
            raise UnknownQuery(
                f"query id {echo(query_id)} is unknown or has expired (a query is kept {minutes} minutes "
                "after its last use): search with the photo again"
            )
        return seen

    def _describe(self, query: Query) -> tuple[Seen, dict]:
        """The query's photo prepared and described once (its garment, and the other likely
        categories where the model picked it), and the products whose photo has its very bytes.
        The timings are the whole photo's: the models' stages (every garment's), the decode and
        the same-photo lookup."""
        t0 = time.perf_counter()
        prepared = prepare_image(query.photo, thumbnail=False)
        box = parse_box(query.box, prepared.original_size) if query.box is not None else None
        t1 = time.perf_counter()
        with self._models.shared():
            looks = describe_query(self.describer, prepared, guide=query.guide, box=box)
        t2 = time.perf_counter()
        with self.live.reading() as index:
            same = tuple(index.same_photo(photo_key(prepared.image_hash)))
        t3 = time.perf_counter()
        timings = dict(looks[0][0][0].timings_ms)  # every description of a query carries the photo's
        timings["prepare"] = round((t1 - t0) * 1e3, 2)
        timings["same_photo"] = round((t3 - t2) * 1e3, 2)
        timings["describe"] = round((t3 - t0) * 1e3, 2)
        garments = tuple(SeenGarment(tuple(descs), tuple(hedge)) for descs, hedge in looks)
        return Seen(query.option, garments, same), timings

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
            with self.live.reading() as index:
                index_rows(index, [record])
            return self.store.metadata(record.id)

    def delete(self, product_id: str) -> bool:
        with self._write_lock:
            found = self.store.delete([product_id]) > 0
            with self.live.reading() as index:
                index.delete([product_id])
            return found

    # -- live re-indexing -------------------------------------------------------------------
    def refresh(self) -> dict | None:
        """Load the index anew when a bulk run into its directory has finished since it was loaded.

        The new RAM index is built beside the old one from one read snapshot of the store, then
        swapped in (``search.live``): a search runs on the old index or the new one, never on a
        half-built one, and never fails for the swap. Product updates through the API wait for it.
        Models changed by the run are loaded too. Returns what was swapped, or None.
        """
        if not isinstance(self.live.index, InvertedIndex) or self.store.built() == self.live.built:
            return None  # another backend (search.milvus) is loaded by `export milvus` instead
        t0 = time.perf_counter()
        with self._write_lock:
            built = self.store.built()
            ram = ram_from_store(self.store, schema=self.schema)
            describer = self.describer
            signature = self.store.info().get("models_signature")
            if signature and describer.signature and signature != describer.signature:
                with self._models.exclusive():  # searches wait while it loads (search.gate)
                    describer = Describer.load(
                        self.store.models_dir(), device=describer.device, runtime=describer.runtime
                    )
            t1 = time.perf_counter()
            changed = describer is not self.describer
            old, swap_ms = self.live.swap(ram, built, (lambda: self._new_models(describer)) if changed else None)
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
        self.live.record(done)
        logger.info("re-loaded the index: %d products (was %d) in %.2fs", len(ram), len(old), t1 - t0)
        return done

    def _new_models(self, describer: Describer) -> None:
        self.describer = describer
        self._answerer = Answerer(self.schema, describer.colour, self.ranking)
        self.recent.clear()  # their codes are of the old models

    @property
    def reloads(self) -> list[dict]:
        return self.live.reloads

    def index_status(self) -> dict:
        """The index being served and the bulk run into its directory, as ``progress.json`` says."""
        return self.live.status(self.store.progress())

    def stats(self) -> dict:
        index = self.live.index
        return {
            "products": len(index),
            "categories": index.category_sizes(),
            "code_bits": index.code_bytes * 8,
            "colour_bins": index.colour_bins,
            "ranking": self.ranking.__dict__,
        }
