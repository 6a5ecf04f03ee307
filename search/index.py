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

Ranking. Among the products of the query's category so narrowed, the ``shortlist`` nearest by
Hamming distance are re-ranked by

    score = w_appearance * hamming / bits
          + w_colour     * colour_distance
          - w_shared     * shared_attributes / query_attributes

where ``colour_distance`` is half the L1 distance between the L1-normalised colour histograms
(0 = identical, 1 = disjoint) and ``shared_attributes`` counts the query's attributes other than
its category that the product has too. Lower is better. Ties are broken by product id, so
results are deterministic; the Hamming shortlist keeps every product tied at its boundary.

Photos. A product of several photos has a row for each, numbered as the store numbers them; a
search answers each product once, at its best photo (the first in the ranking below), and says
which photo that was.

Pages. ``offset`` pages through one ranking: the products in Hamming order (distance, then id)
fall into tiers of ``shortlist``, each re-ranked by score, tier after tier. The first tier is the
ranking above; a deeper page re-ranks the next tier, so every page is the same slice of the same
list whatever the page size, and no product is shown twice or skipped.

Default weights (2.0, 0.25, 0.0) were chosen by ``benchmarks/ranking_weights.py`` on the shared
clothing val photos with the default models (ImageNet MobileNetV2 attribute model, appearance code
fine-tuned on the instance objective): 300 composed shop scenes, weights picked on one half by
recall@10 of the guided and rectangle options, reported on the other. Held-out R@10 guided 0.787
and rectangle 0.720, against 0.473 and 0.607 for the weights chosen the same way for the codes
trained from scratch before (0.25, 2.0, 0.25): a code that finds products deserves the larger
weight, and colour then adds little (0.0 for it: 0.773 / 0.720). The shared-attribute term added
nothing on top (0.0). The appearance model carries the weights chosen for its kind of code
(``appearance.train.INSTANCE_RANKING`` / ``CATEGORY_RANKING``) and the engine ranks with them; these
are the defaults for a model that says nothing. Re-run the script for your own models.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from foundation.schema import Schema, default_schema
from search.hamming import hamming_topk
from search.hits import Hit, RankingConfig, SearchResult, photo_key

__all__ = ["InvertedIndex", "RankingConfig", "Hit", "SearchResult", "hamming_topk", "photo_key"]

logger = logging.getLogger(__name__)

UNKNOWN = 255


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

    def __init__(
        self, *, code_bytes: int, colour_bins: int, schema: Schema | None = None, ranking: RankingConfig | None = None
    ):
        if code_bytes < 1 or colour_bins < 1:
            raise ValueError(f"code_bytes and colour_bins must be positive, got {code_bytes}, {colour_bins}")
        self.schema = schema or default_schema()
        self.code_bytes = code_bytes
        self.colour_bins = colour_bins
        self.ranking = ranking or RankingConfig()
        self._groups = list(self.schema.attribute_groups)
        self._column = {g.name: j for j, g in enumerate(self._groups)}
        self._value_index = [{v: i for i, v in enumerate(g.values)} for g in self._groups]
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

    def _encode_values(self, attributes: Mapping[str, str]) -> np.ndarray:
        row = np.full(len(self._groups), UNKNOWN, np.uint8)
        for j, g in enumerate(self._groups):
            v = attributes.get(g.name)
            if v is not None:
                try:
                    row[j] = self._value_index[j][v]
                except KeyError:
                    raise ValueError(f"unknown value {v!r} for attribute {g.name!r}") from None
        return row

    def _shard(self, category: str) -> _Shard:
        shard = self._shards.get(category)
        if shard is None:
            shard = _Shard(
                faiss.IndexBinaryFlat(self.code_bytes * 8),
                _encode_ids([]),
                None,
                np.empty((0, len(self._groups)), np.uint8),
                np.empty(0, np.uint64),
                np.empty(0, np.float32),
                np.empty(0, np.uint8),
            )
            self._shards[category] = shard
        return shard

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
        """Add (or replace) products, a row a photo. ``codes``: (n, code_bytes) uint8; ``colours``:
        (n, bins); ``photos``: each photo's :func:`photo_key` (0 or None: unknown); ``prices``: None
        for unknown; ``numbers``: which of its product's photos each row is (default 0). A product
        added replaces every photo it had."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        colours = np.asarray(colours)
        n = len(ids)
        photos = np.zeros(n, np.uint64) if photos is None else np.asarray(photos, np.uint64).reshape(-1)
        prices = np.array(
            [np.nan if p is None else p for p in (prices if prices is not None else [None] * n)], np.float32
        )
        if prices.shape != (n,):
            raise ValueError(f"prices must be one per product, got {prices.shape}")
        if not (len(categories) == len(attributes) == n == codes.shape[0] == colours.shape[0]):
            raise ValueError("ids, categories, attributes, codes and colours must have the same length")
        if codes.shape[1] != self.code_bytes or colours.shape[1] != self.colour_bins:
            raise ValueError(
                f"codes must be {self.code_bytes} bytes and colours {self.colour_bins} bins, "
                f"got {codes.shape[1]} and {colours.shape[1]}"
            )
        numbers = np.zeros(n, np.uint8) if numbers is None else np.asarray(numbers, np.uint8).reshape(-1)
        if len(set(zip(ids, numbers.tolist()))) != n:
            raise ValueError("the (id, photo number) pairs to add must be unique")
        for c in set(categories):
            self.schema.check_category(c)
        self.delete(ids)
        categories = np.asarray(categories)
        for category in np.unique(categories):
            sel = np.nonzero(categories == category)[0]
            shard = self._shard(str(category))
            shard.index.add(codes[sel])
            shard.ids = np.concatenate([shard.ids, _encode_ids([ids[i] for i in sel])])
            # uint8 histograms stay uint8; anything else is kept as float16.
            part = colours[sel] if colours.dtype == np.uint8 else colours[sel].astype(np.float16)
            shard.colours = (
                part if shard.colours is None else np.concatenate([shard.colours, part.astype(shard.colours.dtype)])
            )
            shard.values = np.concatenate([shard.values, np.stack([self._encode_values(attributes[i]) for i in sel])])
            shard.photos = np.concatenate([shard.photos, photos[sel]])
            shard.prices = np.concatenate([shard.prices, prices[sel]])
            shard.numbers = np.concatenate([shard.numbers, numbers[sel]])
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
        j = self._column.get(group)
        if j is None or value not in self._value_index[j]:
            raise ValueError(f"unknown attribute key {key!r}")
        v = self._value_index[j][value]
        out = []
        for c in shards:
            shard = self._shards.get(c)
            if shard is not None:
                out.extend(_decode_ids(shard.ids[shard.values[:, j] == v]))
        return list(dict.fromkeys(out))

    # -- search ---------------------------------------------------------------------------
    def _mask(
        self, shard: _Shard, filters: Mapping[str, str] | None, price_min: float | None, price_max: float | None
    ) -> np.ndarray | None:
        """The rows of ``shard`` that hold every filter key and lie in the price range (None: all rows)."""
        if not filters and price_min is None and price_max is None:
            return None
        mask = np.ones(shard.index.ntotal, bool)
        for group, value in (filters or {}).items():
            j = self._column.get(group)
            if j is None or value not in self._value_index[j]:
                raise ValueError(f"unknown filter {group}={value}")
            mask &= shard.values[:, j] == self._value_index[j][value]
        if price_min is not None:
            mask &= shard.prices >= np.float32(price_min)  # NaN (unknown) compares False: left out
        if price_max is not None:
            mask &= shard.prices <= np.float32(price_max)
        return mask

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
        """The products ranked ``offset`` to ``offset + k`` of ``category`` for a query description,
        among those that hold the ``filters`` keys and lie in the price range (module docstring)."""
        self.schema.check_category(category)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
        code = np.asarray(code, np.uint8).reshape(-1)
        if code.size != self.code_bytes:
            raise ValueError(f"the query code has {code.size} bytes, the index {self.code_bytes}")
        shard = self._shards.get(category)
        n = shard.index.ntotal if shard else 0
        r = self.ranking
        note = None
        if n < r.min_category_products:
            note = f"only {n} product{'s' if n != 1 else ''} in category {category!r}"
        if n == 0:
            return SearchResult([], 0, 0, note)
        index, ids = shard.index, shard.ids
        mask = self._mask(shard, filters, price_min, price_max)
        rows_map = None
        if mask is not None:
            rows_map = np.nonzero(mask)[0]
            # A temporary index over the postings' codes: one gather, then the same popcount scan.
            index = faiss.IndexBinaryFlat(self.code_bytes * 8)
            if rows_map.size:
                index.add(self._codes(shard)[rows_map])
            ids = shard.ids[rows_map]
            if rows_map.size < r.min_category_products:
                bounds = [f"{g}={v}" for g, v in (filters or {}).items()]
                bounds += [f"price >= {price_min:g}"] if price_min is not None else []
                bounds += [f"price <= {price_max:g}"] if price_max is not None else []
                note = f"only {rows_map.size} products in category {category!r} with {', '.join(bounds)}"
        multi = shard.product_count() < shard.index.ntotal  # several photos to a product: answer each once
        if not multi:
            candidates = index.ntotal
        else:  # products, not photos
            candidates = shard.product_count() if rows_map is None else int(np.unique(ids).size)
        depth = r.shortlist * -(-(k + offset) // r.shortlist)  # whole tiers
        while True:
            rows, ham = hamming_topk(index, ids, code, depth)
            if rows_map is not None:
                rows = rows_map[rows]
            tier = np.arange(rows.size) // r.shortlist
            score, colour_dist, shared = self._scores(shard, rows, ham, colour, attributes)
            # The score is rounded, so float noise cannot break ties that should go to the id.
            order = np.lexsort((shard.numbers[rows], shard.ids[rows], score, tier))
            if multi:  # each product at its first (best) photo
                _u, first = np.unique(shard.ids[rows[order]], return_index=True)
                order = order[np.sort(first)]
            if not multi or order.size >= k + offset or rows.size >= index.ntotal:
                break
            depth += r.shortlist
        order = order[offset : offset + k]
        hits = self._hits(shard, rows[order], ham[order], score[order], colour_dist[order], shared[order], attributes)
        hits = [dataclasses.replace(h, tier=int(t)) if t else h for h, t in zip(hits, tier[order])]
        return SearchResult(hits, candidates, candidates * self.code_bytes, note)

    def _codes(self, shard: _Shard) -> np.ndarray:
        """The shard's codes as an (n, code_bytes) view of faiss' own storage (no copy)."""
        n = shard.index.ntotal
        return faiss.rev_swig_ptr(shard.index.xb.data(), n * self.code_bytes).reshape(n, self.code_bytes)

    def _scores(self, shard: _Shard, rows: np.ndarray, ham: np.ndarray, colour, attributes):
        """Score, colour distance and shared-attribute mask of ``rows`` of ``shard`` (module docstring)."""
        r = self.ranking
        q_colour = np.asarray(colour, np.float32).reshape(-1)
        q_colour = q_colour / max(float(q_colour.sum()), 1e-12)
        cand_colour = shard.colours[rows].astype(np.float32)
        cand_colour /= np.maximum(cand_colour.sum(1, keepdims=True), 1e-12)
        colour_dist = np.round(0.5 * np.abs(cand_colour - q_colour).sum(1), 6)
        q_values = self._encode_values(attributes)
        known = q_values != UNKNOWN
        shared = (shard.values[rows] == q_values) & known
        n_query = max(int(known.sum()), 1)
        score = np.round(
            np.round(
                r.w_appearance * ham / (self.code_bytes * 8)
                + r.w_colour * (0.5 * np.abs(cand_colour - q_colour).sum(1))
                - r.w_shared * shared.sum(1) / n_query,
                9,
            ),
            6,
        )
        return score, colour_dist, shared

    def _hits(self, shard: _Shard, rows, ham, score, colour_dist, shared, attributes) -> list[Hit]:
        names = [g.name for g in self._groups]
        q_values = self._encode_values(attributes)
        own = shard.values[rows]
        return [
            Hit(
                id=shard.ids[rows[i]].decode("utf-8"),
                score=float(score[i]),
                hamming=int(ham[i]),
                colour_distance=float(colour_dist[i]),
                shared_attributes=tuple(
                    f"{names[j]}={self._groups[j].values[q_values[j]]}" for j in np.nonzero(shared[i])[0]
                ),
                attributes=tuple(
                    (names[j], self._groups[j].values[own[i, j]]) for j in np.nonzero(own[i] != UNKNOWN)[0]
                ),
                photo=int(shard.numbers[rows[i]]),
            )
            for i in range(len(rows))
        ]

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
        """Scored hits for named products, each at its best photo, in any category (the same photo
        found whatever the guess), those that hold the ``filters`` keys and lie in the price range."""
        code = np.asarray(code, np.uint8).reshape(-1)
        out = []
        for shard in self._shards.values():
            hit = np.isin(shard.ids, _encode_ids(list(ids)))
            mask = self._mask(shard, filters, price_min, price_max)
            rows = np.nonzero(hit if mask is None else hit & mask)[0]
            if rows.size == 0:
                continue
            codes = self._codes(shard)[rows]
            ham = np.unpackbits(codes ^ code, axis=1).sum(1).astype(np.int32)
            out.extend(self._hits(shard, rows, ham, *self._scores(shard, rows, ham, colour, attributes), attributes))
        seen: set[str] = set()  # each product at its best photo
        return [h for h in sorted(out, key=lambda h: (h.score, h.id, h.photo)) if not (h.id in seen or seen.add(h.id))]

    # -- snapshot (search.snapshot) ------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write a snapshot (one .npz) atomically, so the daemon can start without re-reading the store."""
        from search.snapshot import save_snapshot

        save_snapshot(self, path)

    @classmethod
    def load(
        cls, path: str | Path, *, schema: Schema | None = None, ranking: RankingConfig | None = None
    ) -> InvertedIndex:
        """The index a snapshot holds; ``ValueError`` when it is of another format or schema."""
        from search.snapshot import load_snapshot

        return load_snapshot(path, schema=schema, ranking=ranking)
