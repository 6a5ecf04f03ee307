"""The in-RAM attribute-keyed inverted index, searched by popcount Hamming distance.

Layout. Products are sharded by fashion category, the mandatory key of every query: each shard
holds its products' packed appearance codes in one faiss ``IndexBinaryFlat`` (contiguous, so a
category's postings are scanned in one sequential popcount pass), their colour histograms beside
them, and one small column per attribute group holding the value index of each product (255:
unknown). The postings of any other key ``group=value`` inside a shard are that column compared
with the value: 1 byte per product and group instead of an id list per key.

Ranking. Among the products of the query's category (narrowed by any hard ``filters`` keys),
the ``shortlist`` nearest by Hamming distance are re-ranked by

    score = w_appearance * hamming / bits
          + w_colour     * colour_distance
          - w_shared     * shared_attributes / query_attributes

where ``colour_distance`` is half the L1 distance between the L1-normalised colour histograms
(0 = identical, 1 = disjoint) and ``shared_attributes`` counts the query's attributes other than
its category that the product has too. Lower is better. Ties are broken by product id, so
results are deterministic; the Hamming shortlist keeps every product tied at its boundary.

Default weights (0.25, 2.0, 0.25) were chosen by ``benchmarks/ranking_weights.py`` on the shared
clothing val photos: 300 composed shop scenes, weights picked on one half by recall@10 of the
guided and rectangle options, reported on the other. Held-out R@10 guided 0.447 and rectangle
0.440, against 0.320 and 0.413 for the first guess (1.0, 0.5, 0.25); appearance weight 0 did as
well for guided queries but worse for rectangles (0.427), 1.0 worse for guided (0.407). Measured
with models trained from scratch on the CPU: re-run the script for your own models.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from foundation.atomic import atomic_write
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

UNKNOWN = 255


@dataclass(frozen=True)
class RankingConfig:
    w_appearance: float = 0.25  # the three weights: chosen on val, see the module docstring
    w_colour: float = 2.0
    w_shared: float = 0.25
    shortlist: int = 200  # nearest by Hamming distance kept for re-ranking
    min_category_products: int = 10  # fewer than this in the query's category: say so

    def __post_init__(self):
        for name in ("w_appearance", "w_colour", "w_shared"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"ranking weight {name} must be a non-negative number, got {getattr(self, name)!r}")
        if self.shortlist < 1:
            raise ValueError(f"shortlist must be at least 1, got {self.shortlist}")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    hamming: int
    colour_distance: float
    shared_attributes: tuple[str, ...]


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    candidates: int  # products in the category after filters
    scanned_bytes: int
    note: str | None = None


@dataclass
class _Shard:
    index: faiss.IndexBinaryFlat
    ids: np.ndarray  # (n,) UTF-8 bytes: a few bytes each instead of a Python str and a dict entry
    colours: np.ndarray | None  # (n, bins)
    values: np.ndarray  # (n, groups) uint8 value indices
    photos: np.ndarray  # (n,) uint64 key of each product photo's bytes (0: unknown)


SNAPSHOT_FORMAT = 2  # 2: each shard keeps its products' photo keys


def photo_key(image_hash: str) -> int:
    """A 64-bit key of a photo's bytes hash (0 when there is none)."""
    try:
        return int(image_hash[:16], 16) if image_hash else 0
    except ValueError:
        return 0


def _decode_ids(ids: np.ndarray) -> list[str]:
    return [i.decode("utf-8") for i in ids]


def _encode_ids(ids: Sequence[str]) -> np.ndarray:
    return np.array([i.encode("utf-8") for i in ids], dtype=np.bytes_) if len(ids) else np.empty(0, "S1")


def hamming_topk(
    index: faiss.IndexBinaryFlat, ids: Sequence[str], query: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and distances of the ``k`` nearest codes, ordered by (distance, id), ties at the boundary kept.

    faiss returns the k nearest in an order of its own among equal distances; this asks for one
    more, and when the boundary is tied collects every tied code with a range search, so the
    result is exact and deterministic.
    """
    n = index.ntotal
    if n == 0 or k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int32)
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.uint8)
    if k >= n:
        dist, rows = index.search(q, n)
    else:
        dist, rows = index.search(q, k + 1)
        if dist[0, k] == dist[0, k - 1]:
            lims, rdist, rrows = index.range_search(q, int(dist[0, k - 1]) + 1)
            dist, rows = rdist[None, :], rrows[None, :]
    dist, rows = dist[0].astype(np.int32), rows[0].astype(np.int64)
    order = np.lexsort((np.asarray(ids)[rows], dist))[:k]
    return rows[order], dist[order]


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
        self._groups = [g for g in self.schema.groups if g.name not in (Schema.GREAT, Schema.CATEGORY)]
        self._value_index = [{v: i for i, v in enumerate(g.values)} for g in self._groups]
        self._shards: dict[str, _Shard] = {}
        self.version: str | None = None  # the store version a snapshot was taken from

    # -- contents -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(s.index.ntotal for s in self._shards.values())

    def __contains__(self, product_id: str) -> bool:
        key = product_id.encode("utf-8")
        return any(bool((s.ids == key).any()) for s in self._shards.values())

    def category_sizes(self) -> dict[str, int]:
        return {c: s.index.ntotal for c, s in sorted(self._shards.items())}

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
    ) -> None:
        """Add (or replace) products. ``codes``: (n, code_bytes) uint8; ``colours``: (n, bins);
        ``photos``: each photo's :func:`photo_key` (0 or None: unknown)."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        colours = np.asarray(colours)
        n = len(ids)
        photos = np.zeros(n, np.uint64) if photos is None else np.asarray(photos, np.uint64).reshape(-1)
        if not (len(categories) == len(attributes) == n == codes.shape[0] == colours.shape[0]):
            raise ValueError("ids, categories, attributes, codes and colours must have the same length")
        if codes.shape[1] != self.code_bytes or colours.shape[1] != self.colour_bins:
            raise ValueError(
                f"codes must be {self.code_bytes} bytes and colours {self.colour_bins} bins, "
                f"got {codes.shape[1]} and {colours.shape[1]}"
            )
        if len(set(ids)) != n:
            raise ValueError("ids to add must be unique")
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

    def delete(self, ids: Iterable[str]) -> int:
        """Remove products; returns how many were there."""
        gone = _encode_ids(list(ids))
        removed = 0
        if gone.size == 0:
            return 0
        for shard in self._shards.values():
            hit = np.isin(shard.ids, gone)
            if not hit.any():
                continue
            shard.index.remove_ids(np.nonzero(hit)[0].astype(np.int64))  # compacts, keeping order
            keep = ~hit
            shard.ids, shard.colours, shard.values = shard.ids[keep], shard.colours[keep], shard.values[keep]
            shard.photos = shard.photos[keep]
            removed += int(hit.sum())
        return removed

    def same_photo(self, key: int) -> list[tuple[str, str]]:
        """(id, category) of every product whose photo has these bytes: one compare per product."""
        if not key:
            return []
        out = []
        for c, shard in self._shards.items():
            for row in np.nonzero(shard.photos == np.uint64(key))[0]:
                out.append((shard.ids[row].decode("utf-8"), c))
        return sorted(out)

    def postings(self, key: str, category: str | None = None) -> list[str]:
        """Product ids holding attribute ``group=value`` (within one category when given)."""
        group, _, value = key.partition("=")
        shards = [category] if category else list(self._shards)
        if group == Schema.CATEGORY:
            return _decode_ids(self._shards[value].ids) if value in self._shards and value in shards else []
        if group == Schema.GREAT:
            return [
                pid
                for c in shards
                if c in self._shards and self.schema.great_category(c) == value
                for pid in _decode_ids(self._shards[c].ids)
            ]
        j = next((j for j, g in enumerate(self._groups) if g.name == group), None)
        if j is None or value not in self._value_index[j]:
            raise ValueError(f"unknown attribute key {key!r}")
        v = self._value_index[j][value]
        out = []
        for c in shards:
            shard = self._shards.get(c)
            if shard is not None:
                out.extend(_decode_ids(shard.ids[shard.values[:, j] == v]))
        return out

    # -- search ---------------------------------------------------------------------------
    def search(
        self,
        code: np.ndarray,
        colour: np.ndarray,
        category: str,
        attributes: Mapping[str, str],
        *,
        k: int = 20,
        filters: Mapping[str, str] | None = None,
    ) -> SearchResult:
        """The ``k`` best products of ``category`` for a query description (module docstring)."""
        self.schema.check_category(category)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
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
        rows_map = None
        if filters:
            mask = np.ones(n, bool)
            for group, value in filters.items():
                j = next((j for j, g in enumerate(self._groups) if g.name == group), None)
                if j is None or value not in self._value_index[j]:
                    raise ValueError(f"unknown filter {group}={value}")
                mask &= shard.values[:, j] == self._value_index[j][value]
            rows_map = np.nonzero(mask)[0]
            # A temporary index over the postings' codes: one gather, then the same popcount scan.
            index = faiss.IndexBinaryFlat(self.code_bytes * 8)
            if rows_map.size:
                index.add(
                    faiss.rev_swig_ptr(shard.index.xb.data(), n * self.code_bytes).reshape(n, self.code_bytes)[rows_map]
                )
            ids = shard.ids[rows_map]
            if rows_map.size < r.min_category_products:
                note = f"only {rows_map.size} products in category {category!r} with {dict(filters)}"
        candidates = index.ntotal
        rows, ham = hamming_topk(index, ids, code, max(r.shortlist, k))
        if rows_map is not None:
            rows = rows_map[rows]
        hits = self._hits(shard, rows, ham, colour, attributes)
        # Rounding keeps float noise from breaking ties that should go to the id.
        hits.sort(key=lambda h: (h.score, h.id))
        return SearchResult(hits[:k], candidates, candidates * self.code_bytes, note)

    def _hits(self, shard: _Shard, rows: np.ndarray, ham: np.ndarray, colour, attributes) -> list[Hit]:
        """Scored hits for ``rows`` of ``shard`` at Hamming distances ``ham`` (module docstring)."""
        r = self.ranking
        q_colour = np.asarray(colour, np.float32).reshape(-1)
        q_colour = q_colour / max(float(q_colour.sum()), 1e-12)
        cand_colour = shard.colours[rows].astype(np.float32)
        cand_colour /= np.maximum(cand_colour.sum(1, keepdims=True), 1e-12)
        colour_dist = 0.5 * np.abs(cand_colour - q_colour).sum(1)
        q_values = self._encode_values(attributes)
        known = q_values != UNKNOWN
        shared = (shard.values[rows] == q_values) & known
        n_query = max(int(known.sum()), 1)
        score = np.round(
            r.w_appearance * ham / (self.code_bytes * 8)
            + r.w_colour * colour_dist
            - r.w_shared * shared.sum(1) / n_query,
            9,
        )
        names = [g.name for g in self._groups]
        return [
            Hit(
                id=shard.ids[rows[i]].decode("utf-8"),
                score=round(float(score[i]), 6),
                hamming=int(ham[i]),
                colour_distance=round(float(colour_dist[i]), 6),
                shared_attributes=tuple(
                    f"{names[j]}={self._groups[j].values[q_values[j]]}" for j in np.nonzero(shared[i])[0]
                ),
            )
            for i in range(len(rows))
        ]

    def hits_for(self, ids: Sequence[str], code: np.ndarray, colour, attributes) -> list[Hit]:
        """Scored hits for named products, in any category (the same photo found whatever the guess)."""
        code = np.asarray(code, np.uint8).reshape(-1)
        out = []
        for shard in self._shards.values():
            rows = np.nonzero(np.isin(shard.ids, _encode_ids(list(ids))))[0]
            if rows.size == 0:
                continue
            n = shard.index.ntotal
            codes = faiss.rev_swig_ptr(shard.index.xb.data(), n * self.code_bytes).reshape(n, self.code_bytes)[rows]
            ham = np.unpackbits(codes ^ code, axis=1).sum(1).astype(np.int32)
            out.extend(self._hits(shard, rows, ham, colour, attributes))
        return out

    # -- snapshot -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write a snapshot (one .npz) atomically, so the daemon can start without re-reading the store."""
        path = Path(path)
        arrays = {}
        meta = {
            "code_bytes": self.code_bytes,
            "colour_bins": self.colour_bins,
            "schema": self.schema.fingerprint,
            "categories": sorted(self._shards),
            "version": self.version,
            "format": SNAPSHOT_FORMAT,
        }
        for c, shard in self._shards.items():
            n = shard.index.ntotal
            arrays[f"{c}/codes"] = (
                faiss.rev_swig_ptr(shard.index.xb.data(), n * self.code_bytes).reshape(n, self.code_bytes).copy()
                if n
                else np.empty((0, self.code_bytes), np.uint8)
            )
            arrays[f"{c}/colours"] = shard.colours
            arrays[f"{c}/values"] = shard.values
            arrays[f"{c}/ids"] = shard.ids
            arrays[f"{c}/photos"] = shard.photos
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(
        cls, path: str | Path, *, schema: Schema | None = None, ranking: RankingConfig | None = None
    ) -> InvertedIndex:
        schema = schema or default_schema()
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("format", 1) != SNAPSHOT_FORMAT:
                raise ValueError(
                    f"the index snapshot {path} is of format {meta.get('format', 1)}, not {SNAPSHOT_FORMAT}"
                )
            if meta["schema"] != schema.fingerprint:
                raise ValueError(
                    f"the index snapshot {path} was built with schema {meta['schema']}, this one is {schema.fingerprint}"
                )
            idx = cls(code_bytes=meta["code_bytes"], colour_bins=meta["colour_bins"], schema=schema, ranking=ranking)
            idx.version = meta.get("version")
            for c in meta["categories"]:
                shard = idx._shard(c)
                shard.index.add(np.ascontiguousarray(z[f"{c}/codes"]))
                shard.ids = z[f"{c}/ids"]
                shard.colours = z[f"{c}/colours"]
                shard.values = z[f"{c}/values"]
                shard.photos = z[f"{c}/photos"]
        return idx
