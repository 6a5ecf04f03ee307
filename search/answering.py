"""From what a search saw in its photo to an answer's garment: each searched category narrowed,
searched and ranked, the lists merged and paged, notes written, display fields read.

Filters and edits: each ``group=value`` is a hard key of the index in every searched category it
applies to, and replaces the description's own value in the ranking's shared-attribute term; a
colour also replaces the photo's colour histogram by that colour's (``indexer.colour.swatch_histogram``
of the schema's swatches). A product whose photo has the very bytes of the query's comes first,
whatever the category.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from foundation.schema import Schema
from indexer.colour import ColourConfig, swatch_histogram
from indexer.description import Description
from search.answer import Attribute, Garment, Result
from search.narrowing import Narrowing
from search.protocol import SearchIndex
from search.ranking import Hit, Probe, RankingConfig, SearchResult, merge
from search.tiers import named_hits, search_category

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeenGarment:
    """One garment as described: its own description first, then one per other likely category."""

    descs: tuple[Description, ...]
    hedge: tuple[tuple[str, float], ...]  # the categories searched and their probability


@dataclass(frozen=True)
class Seen:
    """What a search learnt of its photo: kept under the query's id for re-runs."""

    option: str
    garments: tuple[SeenGarment, ...]  # the likeliest meant first
    same: tuple[tuple[str, str], ...]  # (id, category) of products whose photo has the query's very bytes

    def same_for(self, garment: int) -> tuple[str, ...]:
        """The products of the same photo answered first for a garment: those of a category it
        searched (the first garment's, when no garment searched theirs)."""
        searched = [{c for c, _p in g.hedge} for g in self.garments]
        out = []
        for pid, category in self.same:
            mine = next((n for n, cats in enumerate(searched) if category in cats), 0)
            if mine == garment:
                out.append(pid)
        return tuple(out)


@dataclass(frozen=True)
class Searched:
    """A garment searched: its hits merged and ranked (the same photo first), each category's result,
    the filters applied in each category, and the hits of the same photo."""

    ranked: list[Hit]
    results: list[SearchResult]
    applied: list[dict[str, str]]
    pinned: list[Hit]


def _attributes_of(desc: Description) -> dict[str, str]:
    return {g: v for g, (v, _p) in desc.attributes.items()}


class Answerer:
    """Searches a described garment in an index and shapes its part of the answer."""

    def __init__(self, schema: Schema, colour: ColourConfig, ranking: RankingConfig):
        self.schema = schema
        self.colour = colour
        self.ranking = ranking
        self._swatches: dict[str, np.ndarray] = {}
        self._order = [g.name for g in schema.groups]

    def _colour_of(self, name: str, photo_colour: np.ndarray, bins: int) -> np.ndarray:
        """The histogram of a colour name (the schema's swatches, binned as the index's colours)."""
        if name not in self._swatches:
            shades = self.schema.colour_swatches.get(name)
            if not shades or self.colour.bins != bins:
                logger.warning("no histogram for colour %r: the photo's colour is kept", name)
                return photo_colour
            self._swatches[name] = swatch_histogram(shades, self.colour)
        return self._swatches[name]

    def _probes(self, index: SearchIndex, garment: SeenGarment, filters: Mapping[str, str]) -> list[tuple]:
        """Per searched category: its description, the filters that apply to it, and its probe."""
        runs = []
        for d in garment.descs:
            hard = {g: v for g, v in filters.items() if self.schema.applies(g, d.category)}
            attributes = {**_attributes_of(d), **hard}
            colour = self._colour_of(filters["colour"], d.colour, index.colour_bins) if "colour" in hard else d.colour
            runs.append((d, hard, Probe.of(d.code, colour, attributes, index.columns)))
        return runs

    def hits(self, index: SearchIndex, garment: SeenGarment, same: tuple[str, ...], narrowing: Narrowing) -> Searched:
        """The garment searched in each of its categories: its ranked hits down to one past the page."""
        runs = self._probes(index, garment, narrowing.filters)
        want = narrowing.depth  # one more than the page: is there another page?
        results = [
            search_category(index, probe, d.category, narrowing.only(hard), self.ranking, want)
            for d, hard, probe in runs
        ]
        # the very photo is found whatever its category, narrowed by the keys its garment's search used
        first = narrowing.only(runs[0][1])
        pinned = named_hits(index, list(same), runs[0][2], first, self.ranking) if same else []
        seen: set[str] = set()
        ranked = [h for h in [*pinned, *merge([r.hits for r in results])] if not (h.id in seen or seen.add(h.id))]
        return Searched(ranked, results, [hard for _d, hard, _p in runs], pinned)

    def garment(self, store, garment: SeenGarment, narrowing: Narrowing, searched: Searched) -> Garment:
        """The garment's part of an answer: its description, its page of results and its notes."""
        ranked, results, pinned = searched.ranked, searched.results, searched.pinned
        desc, filters = garment.descs[0], narrowing.filters
        unused = {f"{g}={v}" for hard in searched.applied for g, v in filters.items() if g not in hard}
        used = {f"{g}={v}" for hard in searched.applied for g, v in hard.items()}
        notes = [r.note for r in results if r.note]
        if pinned:
            notes.insert(0, f"the same photo as product {pinned[0].id!r}")
        for key in sorted(unused - used):
            notes.append(f"{key} does not apply to {', '.join(c for c, _p in garment.hedge)}: not used")
        page = ranked[narrowing.offset : narrowing.offset + narrowing.k]
        return Garment(
            box=tuple(int(round(v)) for v in desc.roi),
            category=desc.category,
            categories=tuple((c, p) for c, p in desc.categories),
            attributes=self._attributes(desc, filters),
            fallback=bool(desc.fallback),
            searched=tuple(garment.hedge),
            results=tuple(self._result(store, h, desc.category) for h in page),
            candidates=sum(r.candidates for r in results),
            filters=tuple(key for key in narrowing.keys() if key not in unused - used),
            more=len(ranked) > narrowing.offset + narrowing.k,
            note="; ".join(notes) or None,
        )

    def _attributes(self, desc: Description, edited: Mapping[str, str]) -> tuple[Attribute, ...]:
        """The description's attributes (those a filter set replaced by it), in schema order."""
        out = [Attribute(g, v, round(float(p), 4)) for g, (v, p) in desc.attributes.items() if g not in edited]
        out += [Attribute(g, v, 1.0, edited=True) for g, v in edited.items()]
        order = self._order
        return tuple(sorted(out, key=lambda a: order.index(a.group) if a.group in order else len(order)))

    @staticmethod
    def _result(store, hit: Hit, category: str) -> Result:
        meta = store.metadata(hit.id) or {}
        return Result(
            id=hit.id,
            title=meta.get("title", ""),
            category=meta.get("category", category),
            score=hit.score,
            hamming=hit.hamming,
            colour_distance=hit.colour_distance,
            shared_attributes=hit.shared_attributes,
            attributes=dict(hit.attributes),
            price=meta.get("price"),
            url=meta.get("url"),
            photo=hit.photo,
        )
