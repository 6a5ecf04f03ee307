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
distance is tied), then a throw-away ``InvertedIndex`` over just those products re-ranks them
with the embedded code (same tiers, scores, ties, pages and notes). With ``BIN_FLAT`` the answer
is the embedded one, id for id; with ``BIN_IVF_FLAT`` the shortlist is approximate (``nprobe``).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from foundation.dump import MAX_PHOTOS
from foundation.schema import Schema, default_schema
from search.index import Hit, InvertedIndex, RankingConfig, SearchResult

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


def _pymilvus():
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
        _pymilvus().connections.connect(alias=alias, uri=uri, timeout=10)
    except Exception as exc:  # pymilvus raises its own exception types for an unreachable server
        raise ConnectionError(f"cannot reach Milvus at {uri}: {exc}") from exc
    return alias


def check_collection_name(name: str) -> str:
    """Milvus' own rule for a collection name, checked before any call, so the error names it."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
        raise ValueError(f"--collection must be letters, digits and underscores, not starting with a digit: {name!r}")
    return name


def row_key(product_id: str, number: int = 0) -> str:
    """A photo's row key: the id for the first photo, ``id/n`` for the others."""
    return product_id if not number else f"{product_id}/{number}"


def split_key(key: str) -> tuple[str, int]:
    product_id, _, number = key.partition("/")
    return product_id, int(number or 0)


def _row_keys(ids: Sequence[str]) -> list[str]:
    """Every key a photo of these products may have."""
    return [row_key(i, n) for i in ids for n in range(MAX_PHOTOS)]


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
        ranking: RankingConfig | None = None,
        nprobe: int = 16,
        store=None,
    ):
        if nprobe < 1:
            raise ValueError(f"nprobe must be at least 1, got {nprobe}")
        pm = _pymilvus()
        self.schema = schema or default_schema()
        self.ranking = ranking or RankingConfig()
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
        rows = self._query(f"id in {_literal(_row_keys(ids))}", ["id"])
        return [r["id"] for r in rows]

    def add(
        self,
        ids: Sequence[str],
        categories: Sequence[str],
        attributes: Sequence[Mapping[str, str]],
        codes: np.ndarray,
        colours: np.ndarray,
        photos: Sequence[int] | None = None,
        prices: Sequence[float | None] | None = None,
        numbers: Sequence[int] | None = None,
    ) -> None:
        """Add (or replace) products, a row a photo: ``InvertedIndex.add``'s arguments and checks."""
        self._scorer().add(ids, categories, attributes, codes, colours, photos, prices, numbers)  # the same checks
        n = len(ids)
        display = [(self.store.metadata(i) if self.store is not None else None) or {} for i in ids]
        keys = [row_key(i, int(m)) for i, m in zip(ids, [0] * n if numbers is None else numbers)]
        rows = product_rows(
            keys,
            categories,
            attributes,
            np.asarray(codes, np.uint8),
            np.asarray(colours),
            [0] * n if photos is None else photos,
            [None] * n if prices is None else prices,
            display,
            self._groups,
        )
        self.delete(sorted(set(ids)))
        insert_rows(self.collection, rows)
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

    # -- search ---------------------------------------------------------------------------
    def _expr(self, category: str | None, filters, price_min, price_max) -> str:
        """The filter expression of a category, ``group=value`` keys and a price range."""
        terms = [f"category == {_literal(category)}"] if category is not None else []
        for group, value in (filters or {}).items():
            if value not in self._values.get(group, ()):
                raise ValueError(f"unknown filter {group}={value}")
            terms.append(f"{group} == {_literal(value)}")
        if price_min is not None:
            terms.append(f"price >= {_price_literal(price_min)}")
        if price_max is not None:
            terms.append(f"price <= {_price_literal(price_max)}")
        return " and ".join(terms)

    def _shortlist(self, code: np.ndarray, expr: str, limit: int) -> list[dict]:
        """The ``limit`` nearest products matching ``expr``, and every one tied with the last of them.

        A quarter more than ``limit`` is asked for at once, so that the ties at the boundary come in
        the same answer as a rule; the stored codes are not fetched (``_at_distance``)."""
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
                return [
                    {"id": h.id, **h.entity.to_dict()["entity"], "code": _at_distance(code, h.distance)} for h in hits
                ]
            if ask == MAX_TOPK:
                raise ValueError(f"more than {MAX_TOPK} products tie at the Hamming shortlist's boundary")
            ask = min(ask * 2, MAX_TOPK)

    def _scorer(self, rows: Sequence[dict] = ()) -> InvertedIndex:
        """A throw-away in-RAM index over ``rows`` (entities as Milvus returns them): the embedded ranking."""
        idx = InvertedIndex(
            code_bytes=self.code_bytes, colour_bins=self.colour_bins, schema=self.schema, ranking=self.ranking
        )
        if rows:
            keys = [split_key(r["id"]) for r in rows]
            idx.add(
                [pid for pid, _n in keys],
                [r["category"] for r in rows],
                [{g: r[g] for g in self._groups if r[g]} for r in rows],
                np.stack([np.frombuffer(_code_bytes(r["code"]), np.uint8) for r in rows]),
                np.array([r["colour_histogram"] for r in rows], np.float32).astype(np.float16),
                [int(np.array([r["photo"]], np.int64).view(np.uint64)[0]) for r in rows],
                [None if np.isnan(r["price"]) else r["price"] for r in rows],
                [n for _pid, n in keys],
            )
        return idx

    def search(
        self,
        code: np.ndarray,
        colour: np.ndarray,
        category: str,
        attributes: Mapping[str, str],
        *,
        k: int = 20,
        filters: Mapping[str, str] | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        offset: int = 0,
    ) -> SearchResult:
        """``InvertedIndex.search``: the Hamming shortlist from Milvus, then the embedded re-ranking."""
        self.schema.check_category(category)
        code = np.asarray(code, np.uint8).reshape(-1)
        valid = isinstance(k, (int, np.integer)) and k >= 1 and isinstance(offset, (int, np.integer)) and offset >= 0
        if not valid or code.size != self.code_bytes:
            empty = self._scorer()  # raises the embedded index's own error for a bad k, offset or code
            return empty.search(code, colour, category, attributes, k=k, filters=filters, offset=offset)
        expr = self._expr(category, filters, price_min, price_max)
        r = self.ranking
        # whole tiers, and enough products that a short category's note is the embedded one
        limit = max(r.shortlist * -(-(k + offset) // r.shortlist), r.min_category_products)
        while True:
            rows = self._shortlist(code, expr, limit)
            if not rows and (filters or price_min is not None or price_max is not None):
                # one product the narrowing left out, so the note says "with ..." as the embedded one does
                rows = self._query(f"category == {_literal(category)}", ["id", *self._fields], limit=1)
            scorer = self._scorer(rows)
            result = scorer.search(
                code,
                colour,
                category,
                attributes,
                k=k,
                filters=filters,
                price_min=price_min,
                price_max=price_max,
                offset=offset,
            )
            # products of several photos take several rows each: another tier until the page is full
            if len(result.hits) >= k or len(rows) < limit or limit + r.shortlist > MAX_TOPK:
                break
            limit += r.shortlist
        # a flat search that came back short returned every match; an IVF one may have missed some
        exhausted = len(rows) < limit and self.index_type == "BIN_FLAT"
        candidates = result.candidates if exhausted else self._count(expr)
        return SearchResult(result.hits, candidates, candidates * self.code_bytes, result.note)

    def hits_for(
        self,
        ids: Sequence[str],
        code: np.ndarray,
        colour,
        attributes,
        *,
        filters: Mapping[str, str] | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
    ) -> list[Hit]:
        """``InvertedIndex.hits_for``: named products, in any category, scored as the embedded index does."""
        ids = list(ids)
        if not ids:
            return []
        expr = " and ".join(
            filter(None, [f"id in {_literal(_row_keys(ids))}", self._expr(None, filters, price_min, price_max)])
        )
        rows = sorted(self._query(expr, ["id", *self._fields]), key=lambda r: r["id"])
        return self._scorer(rows).hits_for(ids, code, colour, attributes)


def open_milvus_engine(
    index_dir,
    uri: str,
    *,
    collection: str = COLLECTION,
    nprobe: int = 16,
    device: str = "cpu",
    writable: bool = True,
    ranking: RankingConfig | None = None,
):
    """``SearchEngine.open`` with the collection at ``uri`` in the RAM index's place: the index
    directory still gives the models, the display fields and the thumbnails."""
    from indexer.describe import Describer
    from indexer.store import Store
    from search.engine import SearchEngine

    if not Path(index_dir).is_dir():
        raise FileNotFoundError(f"no index at {index_dir}: build one with `fashion-search index`")
    store = Store(index_dir, readonly=not writable)
    index = MilvusIndex(uri, collection=collection, ranking=ranking, nprobe=nprobe, store=store)
    if index.version is not None and index.version > store.version():
        logger.warning("collection %r was written from a newer store than %s", collection, index_dir)
    describer = Describer.load(store.models_dir(), device=device)
    if describer.code_bytes != index.code_bytes:
        raise ValueError(
            f"collection {collection!r} holds {index.code_bytes * 8}-bit codes, the models of {index_dir} make "
            f"{describer.code_bytes * 8}-bit ones: export this index again"
        )
    return SearchEngine(describer=describer, store=store, index=index, ranking=ranking)


def _at_distance(query: np.ndarray, distance: float) -> bytes:
    """A code exactly ``distance`` bits from ``query``: the re-ranking needs only the Hamming distance
    to the query, which Milvus has just computed, so the stored code is not fetched (a third of a
    search's time here)."""
    flips = np.zeros(query.size * 8, np.uint8)
    flips[: int(distance)] = 1
    return (query ^ np.packbits(flips)).tobytes()


def _code_bytes(value) -> bytes:
    """A BINARY_VECTOR as pymilvus hands it back (bytes, or a one-element list of bytes)."""
    return value[0] if isinstance(value, list) else bytes(value)


def insert_rows(collection, rows: list[dict]) -> None:
    """Insert rows as columns, in the collection's field order: ten times faster than pymilvus' rows."""
    collection.insert([[r[f.name] for r in rows] for f in collection.schema.fields])


def product_rows(keys, categories, attributes, codes, colours, photos, prices, display, groups) -> list[dict]:
    """Collection rows of photos (``keys``: ``row_key``; ``display``: each one's product's title,
    category_path and url, when known)."""
    rows = []
    for i, pid in enumerate(keys):
        shown = display[i]
        price = prices[i]
        rows.append(
            {
                "id": pid,
                "category": categories[i],
                "code": codes[i].tobytes(),
                "colour_histogram": np.asarray(colours[i], np.float32).tolist(),
                "photo": int(np.array([photos[i] or 0], np.uint64).view(np.int64)[0]),
                "price": float("nan") if price is None else float(price),
                "title": shown.get("title") or "",
                "category_path": shown.get("category_path") or "",
                "url": shown.get("url") or "",
                **{g: attributes[i].get(g, "") for g in groups},
            }
        )
    return rows


__all__ = ["COLLECTION", "INDEX_TYPES", "MilvusIndex", "connect", "insert_rows", "open_milvus_engine", "product_rows"]
