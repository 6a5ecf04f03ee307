"""Searching one index the way the engine does, for the index tests of both backends."""

from __future__ import annotations

from search.narrowing import Narrowing
from search.ranking import Probe, RankingConfig
from search.tiers import named_hits, search_page


def ranked(index, code, colour, category, attributes=None, ranking=None, **narrowing):
    """A category's page through ``index`` (either backend), ranked by ``ranking`` (the defaults when None)."""
    probe = Probe.of(code, colour, attributes or {}, index.columns)
    return search_page(index, probe, category, Narrowing.of(**narrowing), ranking or RankingConfig())


def pinned(index, ids, code, colour, attributes=None, ranking=None, **narrowing):
    """The named products' hits (the same photo's), narrowed as a page would be."""
    probe = Probe.of(code, colour, attributes or {}, index.columns)
    return named_hits(index, ids, probe, Narrowing.of(**narrowing), ranking or RankingConfig())
