"""A category searched through any backend: its shortlist ranked tier by tier, paged, with a note
when the category (or its narrowing) holds few products.

The backend (``search.protocol.SearchIndex``) answers the rows nearest the query; ranking is
``search.ranking``'s. Where products have several photos, a page may come up short once each
product is answered once: another tier of the Hamming order is fetched until it is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.narrowing import Narrowing
from search.protocol import SearchIndex
from search.ranking import (
    AttributeColumns,
    Candidates,
    Hit,
    Probe,
    Ranked,
    RankingConfig,
    SearchResult,
    page_hits,
    rank,
    rank_named,
)


def category_note(category: str, total: int, matching: int, narrowing: Narrowing, config: RankingConfig) -> str | None:
    """What an answer says of a category with few products, or few that hold the narrowing's keys."""
    note = None
    if total < config.min_category_products:
        note = f"only {total} product{'s' if total != 1 else ''} in category {category!r}"
    if total and narrowing.narrowed and matching < config.min_category_products:
        note = f"only {matching} products in category {category!r} with {', '.join(narrowing.bounds())}"
    return note


@dataclass(frozen=True)
class Shortlisted:
    """A category's candidates ranked down to the products asked for, and what a result says of it."""

    cands: Candidates
    ranked: Ranked
    candidates: int  # products that hold the narrowing's keys
    scanned_bytes: int
    note: str | None

    def result(self, columns: AttributeColumns, start: int, stop: int) -> SearchResult:
        """Products ``start`` to ``stop`` of the ranking as a result."""
        hits = page_hits(self.cands, self.ranked, columns, start, stop)
        return SearchResult(hits, self.candidates, self.scanned_bytes, self.note)


def shortlist_category(
    index: SearchIndex, probe: Probe, category: str, narrowing: Narrowing, config: RankingConfig, want: int
) -> Shortlisted:
    """The ``want`` best-ranked products of ``category`` among those that hold the narrowing's keys."""
    depth = config.tiers_for(want)
    bits = index.code_bytes * 8
    while True:
        cands = index.shortlist(probe.code, category, narrowing, depth)
        ranked = rank(cands, probe, config, bits)
        if len(ranked) >= want or cands.exhausted or not cands.several_photos():
            break
        depth += config.shortlist
    note = category_note(category, cands.total, cands.matching, narrowing, config)
    return Shortlisted(cands, ranked, cands.products, cands.products * index.code_bytes, note)


def search_category(
    index: SearchIndex, probe: Probe, category: str, narrowing: Narrowing, config: RankingConfig, want: int
) -> SearchResult:
    """The ``want`` best-ranked products of ``category`` among those that hold the narrowing's keys."""
    return shortlist_category(index, probe, category, narrowing, config, want).result(index.columns, 0, want)


def named_hits(
    index: SearchIndex, ids: list[str], probe: Probe, narrowing: Narrowing, config: RankingConfig
) -> list[Hit]:
    """Scored hits of named products, each at its best photo, in any category (the same photo found
    whatever the guess), those that hold the narrowing's keys."""
    if not ids:
        return []
    cands = index.named(ids, probe.code, narrowing)
    ranked = rank_named(cands, probe, config, index.code_bytes * 8)
    return page_hits(cands, ranked, index.columns, 0, len(ranked))


def search_page(
    index: SearchIndex, probe: Probe, category: str, narrowing: Narrowing, config: RankingConfig
) -> SearchResult:
    """The products ranked ``offset`` to ``offset + k`` of ``category`` (the narrowing's page)."""
    want = narrowing.offset + narrowing.k
    return shortlist_category(index, probe, category, narrowing, config, want).result(
        index.columns, narrowing.offset, want
    )
