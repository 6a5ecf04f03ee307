"""The in-RAM attribute-keyed inverted index, searched by popcount Hamming distance.

Layout. Products are sharded by fashion category, the mandatory key of every query: each shard
holds its products' packed appearance codes in one faiss ``IndexBinaryFlat`` (contiguous, so a
category's postings are scanned in one sequential popcount pass), their colour histograms beside
them, and one small column per attribute group holding the value index of each product (255:
unknown). The postings of any other key ``group=value`` inside a shard are that column compared
with the value: 1 byte per product and group instead of an id list per key.

Narrowing. Hard ``filters`` (``group=value`` keys: a shop's filters, a shopper's attribute edits)
and a price range narrow the category's products to those that hold every key and whose price
(a float32 column, NaN when unknown) lies in the range; a product of unknown price is left out
whenever a bound is given.

Ranking and pages are ``search.ranking``'s: the index only answers ``Candidates``, the rows of a
category that hold the keys, nearest the query code first (``shortlist``), or named products'
rows (``named``). A row is a photo: a product of several photos has a row for each, numbered as
the store numbers them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from foundation.schema import Schema, default_schema
from search.hamming import hamming_topk
from search.narrowing import Narrowing
from search.ranking import AttributeColumns, Candidates
from search.rows import PhotoRows, photo_key

__all__ = ["InvertedIndex", "PhotoRows", "hamming_topk", "photo_key"]

logger = logging.getLogger(__name__)


@dataclass
class _Shard:
    index: faiss.IndexBinaryFlat
    ids: np.ndarray  # (n,) UTF-8 bytes: a few bytes each instead of a Python str and a dict entry
    colours: np.ndarray | None  # (n, bins)
    values: np.ndarray  # (n, groups) uint8 value indices
    photos: np.ndarray  # (n,) uint64 key of each product photo's bytes (0: unknown)
    prices: np.ndarray  # (n,) float32 (NaN: unknown)
    numbers: np.ndarray  # (n,) uint8: which of its product's photos the row is
    products: int | None = None  # distinct ids, counted when asked after a change

    def product_count(self) -> int:
        if self.products is None:
            self.products = int(np.unique(self.ids).size) if self.numbers.any() else self.index.ntotal
        return self.products


def _decode_ids(ids: np.ndarray) -> list[str]:
    return [i.decode("utf-8") for i in ids]


def _encode_ids(ids: Sequence[str]) -> np.ndarray:
    return np.array([i.encode("utf-8") for i in ids], dtype=np.bytes_) if len(ids) else np.empty(0, "S1")


class InvertedIndex:
    """Products sharded by fashion category; codes in faiss binary indexes; colours beside them."""

    def __init__(self, *, code_bytes: int, colour_bins: int, schema: Schema | None = None):
        if code_bytes < 1 or colour_bins < 1:
            raise ValueError(f"code_bytes and colour_bins must be positive, got {code_bytes}, {colour_bins}")
        self.schema = schema or default_schema()
        self.code_bytes = code_bytes
        self.colour_bins = colour_bins
        self.columns = AttributeColumns(self.schema)
        self._shards: dict[str, _Shard] = {}
        self._products: int | None = None  # distinct ids, counted when asked after a change
        self.version: str | None = None  # the store version a snapshot was taken from

    # -- contents -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Products (a product of several photos counts once)."""
        if self._products is None:
            ids = [s.ids for s in self._shards.values() if s.index.ntotal]
            self._products = int(np.unique(np.concatenate(ids)).size) if ids else 0
        return self._products

    def photo_count(self) -> int:
        return sum(s.index.ntotal for s in self._shards.values())

    def __contains__(self, product_id: str) -> bool:
        key = product_id.encode("utf-8")
        return any(bool((s.ids == key).any()) for s in self._shards.values())

    def category_sizes(self) -> dict[str, int]:
        return {c: s.product_count() for c, s in sorted(self._shards.items())}

    def _shard(self, category: str) -> _Shard:
        shard = self._shards.get(category)
        if shard is None:
            shard = self._shards[category] = self._shard_template()
        return shard

    def add(self, rows: PhotoRows) -> None:
        """Add (or replace) products, a row a photo: a product added replaces every photo it had."""
        rows.check(self.code_bytes, self.colour_bins, self.schema)
        self.delete(rows.ids)
        categories = np.asarray(rows.categories)
        for category in np.unique(categories):
            sel = np.nonzero(categories == category)[0]
            shard = self._shard(str(category))
            shard.index.add(rows.codes[sel])
            shard.ids = np.concatenate([shard.ids, _encode_ids([rows.ids[i] for i in sel])])
            # uint8 histograms stay uint8; anything else is kept as float16.
            part = rows.colours[sel] if rows.colours.dtype == np.uint8 else rows.colours[sel].astype(np.float16)
            shard.colours = (
                part if shard.colours is None else np.concatenate([shard.colours, part.astype(shard.colours.dtype)])
            )
            values = np.stack([self.columns.encode(rows.attributes[i]) for i in sel])
            shard.values = np.concatenate([shard.values, values])
            shard.photos = np.concatenate([shard.photos, rows.photos[sel]])
            shard.prices = np.concatenate([shard.prices, rows.prices[sel]])
            shard.numbers = np.concatenate([shard.numbers, rows.numbers[sel]])
            shard.products = None
        self._products = None

    def delete(self, ids: Iterable[str]) -> int:
        """Remove products; returns how many were there."""
        gone = _encode_ids(list(ids))
        if gone.size == 0:
            return 0
        found: set[bytes] = set()
        for shard in self._shards.values():
            hit = np.isin(shard.ids, gone)
            if not hit.any():
                continue
            found.update(shard.ids[hit].tolist())
            shard.index.remove_ids(np.nonzero(hit)[0].astype(np.int64))  # compacts, keeping order
            keep = ~hit
            shard.ids, shard.colours, shard.values = shard.ids[keep], shard.colours[keep], shard.values[keep]
            shard.photos, shard.prices, shard.numbers = shard.photos[keep], shard.prices[keep], shard.numbers[keep]
            shard.products = None
        self._products = None
        return len(found)

    def same_photo(self, key: int) -> list[tuple[str, str]]:
        """(id, category) of every product with a photo of these bytes: one compare per photo."""
        if not key:
            return []
        out = set()
        for c, shard in self._shards.items():
            for row in np.nonzero(shard.photos == np.uint64(key))[0]:
                out.add((shard.ids[row].decode("utf-8"), c))
        return sorted(out)

    def postings(self, key: str, category: str | None = None) -> list[str]:
        """Product ids holding attribute ``group=value`` (within one category when given)."""
        group, _, value = key.partition("=")
        shards = [category] if category else list(self._shards)
        if group == Schema.CATEGORY:
            ids = _decode_ids(self._shards[value].ids) if value in self._shards and value in shards else []
            return list(dict.fromkeys(ids))
        if group == Schema.GREAT:
            return [
                pid
                for c in shards
                if c in self._shards and self.schema.great_category(c) == value
                for pid in dict.fromkeys(_decode_ids(self._shards[c].ids))
            ]
        try:
            j, v = self.columns.key(group, value)
        except ValueError:
            raise ValueError(f"unknown attribute key {key!r}") from None
        out = []
        for c in shards:
            shard = self._shards.get(c)
            if shard is not None:
                out.extend(_decode_ids(shard.ids[shard.values[:, j] == v]))
        return list(dict.fromkeys(out))

    # -- candidates -----------------------------------------------------------------------
    def _mask(self, shard: _Shard, narrowing: Narrowing) -> np.ndarray | None:
        """The rows of ``shard`` that hold every filter key and lie in the price range (None: all rows)."""
        if not narrowing.narrowed:
            return None
        mask = np.ones(shard.index.ntotal, bool)
        for group, value in narrowing.filters.items():
            j, v = self.columns.key(group, value)
            mask &= shard.values[:, j] == v
        if narrowing.price_min is not None:
            mask &= shard.prices >= np.float32(narrowing.price_min)  # NaN (unknown) compares False: left out
        if narrowing.price_max is not None:
            mask &= shard.prices <= np.float32(narrowing.price_max)
        return mask

    def _check_code(self, code: np.ndarray) -> np.ndarray:
        code = np.asarray(code, np.uint8).reshape(-1)
        if code.size != self.code_bytes:
            raise ValueError(f"the query code has {code.size} bytes, the index {self.code_bytes}")
        return code

    def shortlist(self, code: np.ndarray, category: str, narrowing: Narrowing, depth: int) -> Candidates:
        """The ``depth`` rows of ``category`` nearest ``code`` among those that hold the narrowing's
        keys, in Hamming order (distance, then id)."""
        self.schema.check_category(category)
        code = self._check_code(code)
        shard = self._shards.get(category)
        if shard is None or shard.index.ntotal == 0:
            return self._gather(self._shard(category), np.empty(0, np.int64), np.empty(0, np.int32))
        index, ids, rows_map = shard.index, shard.ids, None
        mask = self._mask(shard, narrowing)
        if mask is not None:
            rows_map = np.nonzero(mask)[0]
            # A temporary index over the postings' codes: one gather, then the same popcount scan.
            index = faiss.IndexBinaryFlat(self.code_bytes * 8)
            if rows_map.size:
                index.add(self._codes(shard)[rows_map])
            ids = shard.ids[rows_map]
        multi = shard.product_count() < shard.index.ntotal  # several photos to a product: count products
        if not multi:
            products = index.ntotal
        else:
            products = shard.product_count() if rows_map is None else int(np.unique(ids).size)
        rows, ham = hamming_topk(index, ids, code, depth)
        if rows_map is not None:
            rows = rows_map[rows]
        out = self._gather(shard, rows, ham)
        return replace(out, exhausted=rows.size >= index.ntotal, matching=index.ntotal, products=products)

    def named(self, ids: Sequence[str], code: np.ndarray, narrowing: Narrowing) -> Candidates:
        """Every photo of the named products, in any category, that holds the narrowing's keys."""
        code = self._check_code(code)
        wanted = _encode_ids(list(ids))
        parts = []
        for shard in self._shards.values():
            hit = np.isin(shard.ids, wanted)
            mask = self._mask(shard, narrowing)
            rows = np.nonzero(hit if mask is None else hit & mask)[0]
            if rows.size:
                ham = np.unpackbits(self._codes(shard)[rows] ^ code, axis=1).sum(1).astype(np.int32)
                parts.append(self._gather(shard, rows, ham))
        if not parts:
            return self._gather(self._shard_template(), np.empty(0, np.int64), np.empty(0, np.int32))
        return Candidates.concat(parts)

    def _gather(self, shard: _Shard, rows: np.ndarray, ham: np.ndarray) -> Candidates:
        colours = shard.colours[rows] if shard.colours is not None else np.zeros((0, self.colour_bins), np.float16)
        n = shard.index.ntotal
        return Candidates(shard.ids[rows], ham, colours, shard.values[rows], shard.numbers[rows], True, n, n, n)

    def _shard_template(self) -> _Shard:
        return _Shard(
            faiss.IndexBinaryFlat(self.code_bytes * 8),
            _encode_ids([]),
            None,
            np.empty((0, len(self.columns)), np.uint8),
            np.empty(0, np.uint64),
            np.empty(0, np.float32),
            np.empty(0, np.uint8),
        )

    def _codes(self, shard: _Shard) -> np.ndarray:
        """The shard's codes as an (n, code_bytes) view of faiss' own storage (no copy)."""
        n = shard.index.ntotal
        return faiss.rev_swig_ptr(shard.index.xb.data(), n * self.code_bytes).reshape(n, self.code_bytes)

    # -- snapshot (search.snapshot) ------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write a snapshot (one .npz) atomically, so the daemon can start without re-reading the store."""
        from search.snapshot import save_snapshot

        save_snapshot(self, path)

    @classmethod
    def load(cls, path: str | Path, *, schema: Schema | None = None) -> InvertedIndex:
        """The index a snapshot holds; ``ValueError`` when it is of another format or schema."""
        from search.snapshot import load_snapshot

        return load_snapshot(path, schema=schema)
