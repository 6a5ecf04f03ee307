"""Milvus as the serving index: the in-RAM index's role (``search.index.InvertedIndex``) on a Milvus server.

One collection holds the catalogue: the appearance code as a ``BINARY_VECTOR`` (HAMMING metric,
``BIN_FLAT`` exact or ``BIN_IVF_FLAT`` approximate), the fashion category as the partition key,
each attribute group as a ``VARCHAR`` field (``""``: unknown), so a key ``group=value`` is the
filter expression ``group == "value"``; the colour histogram, the photo key and the price for the
re-ranking, and the product's title, category path and URL for display. The collection's
description records the code size, colour bins and schema it was written with. A row is a photo:
its key is the product's id for its first photo and ``id/n`` for photo n (``indexer.store``'s
numbering; ``/`` never occurs in an id), so the counts Milvus gives are of photos.

Search keeps the embedded ranking exactly: Milvus finds the Hamming shortlist inside the category
partition with the filters and price range as its expression (every product tied at the
shortlist's boundary is fetched too: the query is repeated with a larger limit while the last
distance is tied), and answers it as ``Candidates`` with the distances it computed; ranking them
is ``search.ranking``'s, as for the RAM index (same tiers, scores, ties, pages and notes). With
``BIN_FLAT`` the answer is the embedded one, id for id; with ``BIN_IVF_FLAT`` the shortlist is
approximate (``nprobe``).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from foundation.schema import Schema, default_schema
from search.milvus_rows import code_bytes_of, insert_rows, product_rows, row_key, row_keys, split_key
from search.narrowing import Narrowing
from search.ranking import AttributeColumns, Candidates, hamming_order
from search.rows import PhotoRows

logger = logging.getLogger(__name__)

COLLECTION = "fashion_search"
FORMAT = 1
MAX_TOPK = 16384  # Milvus' largest search limit
INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
# fields of every collection; an attribute group may not take one of these names
FIXED_FIELDS = ("id", "category", "code", "colour_histogram", "photo", "price", "title", "category_path", "url")
_ALIASES = itertools.count()
# "Session": a client reads its own writes at once; "Strong" would wait for the server's next time
# tick on every read (200-430 ms a search here, against 10 ms)
CONSISTENCY = "Session"
# a search says how many products its narrowing leaves: a count that other servers' writes may
# change, so it is asked again after this long (a full scan of the category each time otherwise)
COUNT_TTL_S = 30.0
# a shortlist asks for at least this many photos, so that a short category's counts (what a note
# about few products says) come with it, exact, without another query
EXACT_BELOW = 100


def load_pymilvus():
    try:
        import pymilvus
    except ImportError as exc:  # an optional extra: say how to get it
        raise ImportError("the Milvus backend needs pymilvus: pip install 'fashion-search[milvus]'") from exc
    return pymilvus


def connect(uri: str) -> str:
    """A pymilvus connection alias to the server at ``uri`` (``http://host:19530``)."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ValueError(f"--milvus must be a server URI such as http://127.0.0.1:19530, got {uri!r}")
    alias = f"fashion-search-{next(_ALIASES)}"
    try:
        load_pymilvus().connections.connect(alias=alias, uri=uri, timeout=10)
    except Exception as exc:  # pymilvus raises its own exception types for an unreachable server
        raise ConnectionError(f"cannot reach Milvus at {uri}: {exc}") from exc
    return alias


def check_collection_name(name: str) -> str:
    """Milvus' own rule for a collection name, checked before any call, so the error names it."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
        raise ValueError(f"--collection must be letters, digits and underscores, not starting with a digit: {name!r}")
    return name


def _literal(value) -> str:
    return json.dumps(value)  # a double-quoted, escaped string literal of Milvus' expression language


def _price_literal(price: float) -> str:
    # the embedded index compares float32 prices: the same bound, as a double Milvus reads back exactly
    return repr(float(np.float32(price)))


class MilvusIndex:
    """The ``InvertedIndex`` methods the engine uses, answered by a Milvus collection.

    Args:
        uri: the Milvus server (``http://host:19530``).
        collection: the collection ``fashion-search export milvus`` wrote.
        nprobe: clusters searched per query when the collection's index is ``BIN_IVF_FLAT``.
        store: the index directory's store, read for the display fields of a product added later.
    """

    def __init__(
        self,
        uri: str,
        *,
        collection: str = COLLECTION,
        schema: Schema | None = None,
        nprobe: int = 16,
        store=None,
    ):
        if nprobe < 1:
            raise ValueError(f"nprobe must be at least 1, got {nprobe}")
        pm = load_pymilvus()
        self.schema = schema or default_schema()
        self.columns = AttributeColumns(self.schema)
        self.nprobe = nprobe
        self.store = store
        self.uri = uri
        check_collection_name(collection)
        self.alias = connect(uri)
        if not pm.utility.has_collection(collection, using=self.alias):
            raise FileNotFoundError(
                f"Milvus at {uri} has no collection {collection!r}: load one with `fashion-search export milvus`"
            )
        self.collection = pm.Collection(collection, using=self.alias)
        try:
            info = json.loads(self.collection.description)
        except ValueError:
            info = {}
        if info.get("format") != FORMAT:
            raise ValueError(f"collection {collection!r} was not written by `fashion-search export milvus`")
        if info["schema"] != self.schema.fingerprint:
            raise ValueError(f"collection {collection!r} holds schema {info['schema']}, not {self.schema.fingerprint}")
        self.code_bytes = info["code_bits"] // 8
        self.colour_bins = info["colour_bins"]
        self.version = info.get("store_version")
        self.metric = {"metric_type": "HAMMING", "params": {"nprobe": nprobe}}
        self.index_type = info.get("index_type", "BIN_FLAT")
        self._groups = [g.name for g in self.schema.attribute_groups]
        self._values = {g.name: set(g.values) for g in self.schema.attribute_groups}
        self._fields = ["category", "code", "colour_histogram", "photo", "price", *self._groups]
        self._counts: dict[str, tuple[float, int]] = {}  # expression -> (when, products)
        self.collection.load()

    # -- contents -------------------------------------------------------------------------
    def _query(self, expr: str, fields: list[str], **kw) -> list[dict]:
        return self.collection.query(expr, output_fields=fields, consistency_level=CONSISTENCY, **kw)

    def _count(self, expr: str = "") -> int:
        """Products matching ``expr``; remembered ``COUNT_TTL_S`` (its own writes forget them at once)."""
        now = time.monotonic()
        known = self._counts.get(expr)
        if known is None or now - known[0] > COUNT_TTL_S:
            known = self._counts[expr] = (now, int(self._query(expr, ["count(*)"])[0]["count(*)"]))
        return known[1]

    def __len__(self) -> int:
        return self._count()

    def photo_count(self) -> int:
        return self._count()

    def __contains__(self, product_id: str) -> bool:
        return bool(self._existing([product_id]))

    def category_sizes(self) -> dict[str, int]:
        sizes = {c: self._count(f"category == {_literal(c)}") for c in sorted(self.schema.category_names)}
        return {c: n for c, n in sizes.items() if n}

    def _existing(self, ids: Sequence[str]) -> list[str]:
        """The row keys of every photo of these products."""
        if not ids:
            return []
        rows = self._query(f"id in {_literal(row_keys(ids))}", ["id"])
        return [r["id"] for r in rows]

    def add(self, rows: PhotoRows) -> None:
        """Add (or replace) products, a row a photo, as ``InvertedIndex.add`` does."""
        rows.check(self.code_bytes, self.colour_bins, self.schema)
        display = [(self.store.metadata(i) if self.store is not None else None) or {} for i in rows.ids]
        keys = [row_key(i, int(m)) for i, m in zip(rows.ids, rows.numbers)]
        records = product_rows(rows, display, self._groups)
        self.delete(sorted(set(rows.ids)))
        insert_rows(self.collection, records)
        self._settle(keys)

    def delete(self, ids: Iterable[str]) -> int:
        """Remove products (every photo of each); returns how many were there."""
        ids = list(ids)
        there = self._existing(ids)
        if there:
            self.collection.delete(f"id in {_literal(there)}")
            self._settle(there)
        return len({split_key(k)[0] for k in there})

    def _settle(self, ids: Sequence[str]) -> None:
        """Wait until a write is visible to every later read: one strongly consistent read of its ids
        (a "Session" read alone may not see a delete yet); the remembered counts are forgotten."""
        self._counts.clear()
        self.collection.query(f"id in {_literal(list(ids))}", output_fields=["id"], consistency_level="Strong")

    def same_photo(self, key: int) -> list[tuple[str, str]]:
        if not key:
            return []
        signed = int(np.array([key], np.uint64).view(np.int64)[0])
        rows = self._query(f"photo == {signed}", ["id", "category"])
        return sorted({(split_key(r["id"])[0], r["category"]) for r in rows})

    # -- candidates -----------------------------------------------------------------------
    def _expr(self, category: str | None, narrowing: Narrowing) -> str:
        """The filter expression of a category, ``group=value`` keys and a price range."""
        terms = [f"category == {_literal(category)}"] if category is not None else []
        for group, value in narrowing.filters.items():
            if value not in self._values.get(group, ()):
                raise ValueError(f"unknown filter {group}={value}")
            terms.append(f"{group} == {_literal(value)}")
        if narrowing.price_min is not None:
            terms.append(f"price >= {_price_literal(narrowing.price_min)}")
        if narrowing.price_max is not None:
            terms.append(f"price <= {_price_literal(narrowing.price_max)}")
        return " and ".join(terms)

    def _nearest(self, code: np.ndarray, expr: str, limit: int) -> list[tuple[dict, int]]:
        """The ``limit`` nearest photos matching ``expr`` with their distances, and every one tied
        with the last of them. A quarter more than ``limit`` is asked for at once, so that the ties
        at the boundary come in the same answer as a rule; the stored codes are not fetched (the
        ranking needs only the distance Milvus has just computed)."""
        ask = min(limit + limit // 4 + 8, MAX_TOPK)
        fields = [f for f in self._fields if f != "code"]
        while True:
            (found,) = self.collection.search(
                [code.tobytes()],
                "code",
                self.metric,
                limit=ask,
                expr=expr or None,
                output_fields=fields,
                consistency_level=CONSISTENCY,
            )
            hits = list(found)
            if len(hits) < ask or hits[-1].distance > hits[limit - 1].distance:
                return [({"id": h.id, **h.entity.to_dict()["entity"]}, int(h.distance)) for h in hits]
            if ask == MAX_TOPK:
                raise ValueError(f"more than {MAX_TOPK} products tie at the Hamming shortlist's boundary")
            ask = min(ask * 2, MAX_TOPK)

    def _check_code(self, code: np.ndarray) -> np.ndarray:
        code = np.asarray(code, np.uint8).reshape(-1)
        if code.size != self.code_bytes:
            raise ValueError(f"the query code has {code.size} bytes, the index {self.code_bytes}")
        return code

    def _candidates(self, found: list[tuple[dict, int]]) -> Candidates:
        """Rows as Milvus returns them, with their distances, as ranking reads candidates."""
        keys = [split_key(r["id"]) for r, _d in found]
        ids = np.array([pid.encode("utf-8") for pid, _n in keys], dtype=np.bytes_) if keys else np.empty(0, "S1")
        values = [self.columns.encode({g: r[g] for g in self._groups if r[g]}) for r, _d in found]
        return Candidates(
            ids,
            np.array([d for _r, d in found], np.int32),
            np.array([r["colour_histogram"] for r, _d in found], np.float32)
            .reshape(len(found), self.colour_bins)
            .astype(np.float16),
            np.stack(values) if values else np.empty((0, len(self.columns)), np.uint8),
            np.array([n for _pid, n in keys], np.uint8),
        )

    def shortlist(self, code: np.ndarray, category: str, narrowing: Narrowing, depth: int) -> Candidates:
        """``SearchIndex.shortlist``: the Hamming shortlist from Milvus, in the embedded order."""
        self.schema.check_category(category)
        code = self._check_code(code)
        expr = self._expr(category, narrowing)
        limit = min(max(depth, EXACT_BELOW), MAX_TOPK)
        found = self._nearest(code, expr, limit)
        cands = self._candidates(found)
        order = hamming_order(cands.ids, cands.hamming, cands.numbers, depth)
        # a flat search that came back short returned every match; an IVF one may have missed some
        exhausted = len(found) < limit
        matching = len(found)
        total = matching if matching or not narrowing.narrowed else self._count(self._expr(category, Narrowing()))
        products = int(np.unique(cands.ids).size) if exhausted and self.index_type == "BIN_FLAT" else self._count(expr)
        return Candidates(
            cands.ids[order],
            cands.hamming[order],
            cands.colours[order],
            cands.values[order],
            cands.numbers[order],
            exhausted,
            total,
            matching,
            products,
        )

    def named(self, ids: Sequence[str], code: np.ndarray, narrowing: Narrowing) -> Candidates:
        """``SearchIndex.named``: every photo of the named products that holds the keys, in any category."""
        ids = list(ids)
        code = self._check_code(code)
        expr = " and ".join(filter(None, [f"id in {_literal(row_keys(ids))}", self._expr(None, narrowing)]))
        rows = sorted(self._query(expr, ["id", *self._fields]), key=lambda r: r["id"])
        ham = [int(np.unpackbits(np.frombuffer(code_bytes_of(r["code"]), np.uint8) ^ code).sum()) for r in rows]
        return self._candidates(list(zip(rows, ham)))


def open_milvus_engine(
    index_dir,
    uri: str,
    *,
    collection: str = COLLECTION,
    nprobe: int = 16,
    device: str = "cpu",
    writable: bool = True,
):
    """``SearchEngine.open`` with the collection at ``uri`` in the RAM index's place: the index
    directory still gives the models, the display fields and the thumbnails."""
    from indexer.describe import Describer
    from indexer.store import Store
    from search.engine import SearchEngine

    if not Path(index_dir).is_dir():
        raise FileNotFoundError(f"no index at {index_dir}: build one with `fashion-search index`")
    store = Store(index_dir, readonly=not writable)
    index = MilvusIndex(uri, collection=collection, nprobe=nprobe, store=store)
    if index.version is not None and index.version > store.version():
        logger.warning("collection %r was written from a newer store than %s", collection, index_dir)
    describer = Describer.load(store.models_dir(), device=device)
    if describer.code_bytes != index.code_bytes:
        raise ValueError(
            f"collection {collection!r} holds {index.code_bytes * 8}-bit codes, the models of {index_dir} make "
            f"{describer.code_bytes * 8}-bit ones: export this index again"
        )
    return SearchEngine(describer=describer, store=store, index=index)


__all__ = ["COLLECTION", "INDEX_TYPES", "MilvusIndex", "connect", "insert_rows", "open_milvus_engine", "product_rows"]
