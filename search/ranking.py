"""Ranking: pure functions from a backend's candidates to ranked products and a page.

A backend (``search.index``'s RAM shards, ``search.milvus``' expression search) only returns
``Candidates``: the rows of one category that hold the query's hard keys, nearest the query code
first, each with its Hamming distance, colour histogram, attribute values and photo number. Every
backend then ranks them here, so a change of ranking is a change of this module alone.

Score. Among the candidates, the ``shortlist`` nearest by Hamming distance are re-ranked by

    score = w_appearance * hamming / bits
          + w_colour     * colour_distance
          - w_shared     * shared_attributes / query_attributes

where ``colour_distance`` is half the L1 distance between the L1-normalised colour histograms
(0 = identical, 1 = disjoint) and ``shared_attributes`` counts the query's attributes other than
its category that the product has too. Lower is better; ties go to the product id, so results are
deterministic.

Tiers and pages. The candidates in Hamming order (distance, then id) fall into tiers of
``shortlist``, each re-ranked by score, tier after tier: a deeper page re-ranks the next tier, so
every page is the same slice of the same list whatever the page size. A product of several photos
is answered once, at its best photo (the first in this order), and says which photo that was.

The default weights are those of ``appearance.ranking.INSTANCE_RANKING``, chosen on the shared
clothing val photos for the default (instance-trained) code; a model carries the weights chosen
for its kind of code, and the engine ranks with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from appearance.ranking import INSTANCE_RANKING
from foundation.schema import Schema

UNKNOWN = 255  # an attribute value the photo does not have


@dataclass(frozen=True)
class RankingConfig:
    w_appearance: float = INSTANCE_RANKING["w_appearance"]
    w_colour: float = INSTANCE_RANKING["w_colour"]
    w_shared: float = INSTANCE_RANKING["w_shared"]
    shortlist: int = 200  # nearest by Hamming distance kept for re-ranking: one tier
    min_category_products: int = 10  # fewer than this in the query's category: say so

    def __post_init__(self):
        for name in ("w_appearance", "w_colour", "w_shared"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"ranking weight {name} must be a non-negative number, got {getattr(self, name)!r}")
        if self.shortlist < 1:
            raise ValueError(f"shortlist must be at least 1, got {self.shortlist}")

    def tiers_for(self, n: int) -> int:
        """Rows of whole tiers that hold the first ``n`` products."""
        return self.shortlist * -(-n // self.shortlist)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    hamming: int
    colour_distance: float
    shared_attributes: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...] = ()  # the product's own (group, value), schema order
    tier: int = 0  # which shortlist of the Hamming order it was re-ranked in
    photo: int = 0  # which of the product's photos matched (its best)


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    candidates: int  # products in the category after filters
    scanned_bytes: int
    note: str | None = None


class AttributeColumns:
    """The schema's attribute groups below the category as byte columns: one value index per
    group and photo, ``UNKNOWN`` where the photo has none."""

    def __init__(self, schema: Schema):
        self.groups = list(schema.attribute_groups)
        self.names = [g.name for g in self.groups]
        self.column = {g.name: j for j, g in enumerate(self.groups)}
        self._index = [{v: i for i, v in enumerate(g.values)} for g in self.groups]

    def __len__(self) -> int:
        return len(self.groups)

    def encode(self, attributes: Mapping[str, str]) -> np.ndarray:
        """One photo's attributes (group -> value; other groups ignored) as a row of value indices."""
        row = np.full(len(self.groups), UNKNOWN, np.uint8)
        for j, g in enumerate(self.groups):
            v = attributes.get(g.name)
            if v is not None:
                try:
                    row[j] = self._index[j][v]
                except KeyError:
                    raise ValueError(f"unknown value {v!r} for attribute {g.name!r}") from None
        return row

    def key(self, group: str, value: str) -> tuple[int, int]:
        """(column, value index) of a filter key ``group=value``."""
        j = self.column.get(group)
        if j is None or value not in self._index[j]:
            raise ValueError(f"unknown filter {group}={value}")
        return j, self._index[j][value]


@dataclass(frozen=True)
class Probe:
    """A query's description as a backend and the ranking read it: its packed appearance code, its
    colour histogram (L1-normalised) and its attributes as value indices (``AttributeColumns.encode``)."""

    code: np.ndarray
    colour: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, code, colour, attributes: Mapping[str, str], columns: AttributeColumns) -> Probe:
        q = np.asarray(colour, np.float32).reshape(-1)
        code = np.asarray(code, np.uint8).reshape(-1)
        return cls(code, q / max(float(q.sum()), 1e-12), columns.encode(attributes))


@dataclass(frozen=True)
class Candidates:
    """Rows a backend found for a query, each a photo: in Hamming order (distance, then id) for a
    category's shortlist, in any order for named products.

    Args:
        ids: (n,) UTF-8 bytes of the product ids.
        hamming: (n,) int32 distances to the query code.
        colours: (n, bins) colour histograms (any non-negative dtype).
        values: (n, groups) uint8 attribute value indices.
        numbers: (n,) uint8: which of its product's photos each row is.
        exhausted: every row that holds the query's keys is here.
        total: photos in the category (exact where fewer than ``min_category_products``).
        matching: photos that hold the query's keys (exact where fewer than ``min_category_products``).
        products: products that hold the query's keys (what an answer calls its candidates).
    """

    ids: np.ndarray
    hamming: np.ndarray
    colours: np.ndarray
    values: np.ndarray
    numbers: np.ndarray
    exhausted: bool = True
    total: int = 0
    matching: int = 0
    products: int = 0

    def __len__(self) -> int:
        return int(self.ids.size)

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        """The rows of several answers (of named products, say), one after another."""
        return cls(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.hamming for p in parts]),
            np.concatenate([p.colours for p in parts]),
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.numbers for p in parts]),
        )

    def several_photos(self) -> bool:
        return bool(self.numbers.any()) and np.unique(self.ids).size < self.ids.size


def scores(cands: Candidates, probe: Probe, config: RankingConfig, code_bits: int):
    """Score, colour distance and shared-attribute mask of each candidate (module docstring)."""
    cand_colour = cands.colours.astype(np.float32)
    cand_colour /= np.maximum(cand_colour.sum(1, keepdims=True), 1e-12)
    colour_dist = np.round(0.5 * np.abs(cand_colour - probe.colour).sum(1), 6)
    known = probe.values != UNKNOWN
    shared = (cands.values == probe.values) & known
    n_query = max(int(known.sum()), 1)
    score = np.round(
        np.round(
            config.w_appearance * cands.hamming / code_bits
            + config.w_colour * (0.5 * np.abs(cand_colour - probe.colour).sum(1))
            - config.w_shared * shared.sum(1) / n_query,
            9,
        ),
        6,
    )
    return score, colour_dist, shared


@dataclass(frozen=True)
class Ranked:
    """Candidates in ranked order: ``order`` indexes them, each product once at its best photo."""

    order: np.ndarray
    tier: np.ndarray
    score: np.ndarray
    colour_distance: np.ndarray
    shared: np.ndarray

    def __len__(self) -> int:
        return int(self.order.size)


def rank(cands: Candidates, probe: Probe, config: RankingConfig, code_bits: int) -> Ranked:
    """A shortlist's candidates (Hamming order) ranked tier by tier, each product once."""
    tier = np.arange(len(cands)) // config.shortlist
    score, colour_dist, shared = scores(cands, probe, config, code_bits)
    # The score is rounded, so float noise cannot break ties that should go to the id.
    order = np.lexsort((cands.numbers, cands.ids, score, tier))
    if cands.several_photos():  # each product at its first (best) photo
        _u, first = np.unique(cands.ids[order], return_index=True)
        order = order[np.sort(first)]
    return Ranked(order, tier, score, colour_dist, shared)


def rank_named(cands: Candidates, probe: Probe, config: RankingConfig, code_bits: int) -> Ranked:
    """Named products (any order, any category) by score, each at its best photo: no tiers."""
    score, colour_dist, shared = scores(cands, probe, config, code_bits)
    order = np.lexsort((cands.numbers, cands.ids, score))
    _u, first = np.unique(cands.ids[order], return_index=True)
    order = order[np.sort(first)]
    return Ranked(order, np.zeros(len(cands), np.int64), score, colour_dist, shared)


def page_hits(cands: Candidates, ranked: Ranked, columns: AttributeColumns, start: int, stop: int) -> list[Hit]:
    """The ranked products ``start`` to ``stop`` as hits."""
    out = []
    for i in ranked.order[start:stop]:
        own = cands.values[i]  # where ``shared`` holds, the query's own value too
        out.append(
            Hit(
                id=cands.ids[i].decode("utf-8"),
                score=float(ranked.score[i]),
                hamming=int(cands.hamming[i]),
                colour_distance=float(ranked.colour_distance[i]),
                shared_attributes=tuple(
                    f"{columns.names[j]}={columns.groups[j].values[own[j]]}" for j in np.nonzero(ranked.shared[i])[0]
                ),
                attributes=tuple(
                    (columns.names[j], columns.groups[j].values[own[j]]) for j in np.nonzero(own != UNKNOWN)[0]
                ),
                tier=int(ranked.tier[i]),
                photo=int(cands.numbers[i]),
            )
        )
    return out


def hamming_order(ids: np.ndarray, hamming: np.ndarray, numbers: np.ndarray, depth: int) -> np.ndarray:
    """Indices of the ``depth`` nearest rows by (distance, id, photo): ties at the boundary go to the id."""
    return np.lexsort((numbers, ids, hamming))[:depth]


def merge(results: Sequence[Sequence[Hit]]) -> list[Hit]:
    """Hits of several categories in one order: tier, score, id."""
    return sorted((h for r in results for h in r), key=lambda h: (h.tier, h.score, h.id))
