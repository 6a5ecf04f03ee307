"""What a search answers: an ``Answer`` holds one group per garment of the photo, each with its box,
category, searched categories, attributes and results; the selected garment's results are the
answer's own. ``to_json`` is the API's and the CLI's shape (``webui/openapi.json``: ``SearchResponse``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from search.narrowing import Narrowing


@dataclass(frozen=True)
class Result:
    """One product of an answer, at the photo of it that matched."""

    id: str
    title: str
    category: str
    score: float
    hamming: int
    colour_distance: float
    shared_attributes: tuple[str, ...]
    attributes: dict[str, str]
    price: float | None
    url: str | None
    photo: int

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "category": self.category,
            "score": self.score,
            "hamming": self.hamming,
            "colour_distance": self.colour_distance,
            "shared_attributes": list(self.shared_attributes),
            "attributes": dict(self.attributes),
            "price": self.price,
            "url": self.url,
            "photo": self.photo,
        }


@dataclass(frozen=True)
class Attribute:
    group: str
    value: str
    p: float
    edited: bool = False  # set by a filter, not read from the photo

    def to_json(self) -> dict:
        out = {"group": self.group, "value": self.value, "p": self.p}
        return {**out, "edited": True} if self.edited else out


@dataclass(frozen=True)
class Garment:
    """One garment of the photo and its results.

    Args:
        box: ``x0, y0, x1, y1`` in the upright photo's pixels (the whole photo when ``fallback``).
        category: the category it was read as; ``categories`` the likely ones with their probability.
        searched: the categories searched for it, with their probability.
        filters: the narrowing's keys that were used (those that apply to a searched category).
        candidates: the products that held the keys, in every searched category.
        more: whether another page follows.
    """

    box: tuple[int, int, int, int]
    category: str
    categories: tuple[tuple[str, float], ...]
    attributes: tuple[Attribute, ...]
    fallback: bool
    searched: tuple[tuple[str, float], ...]
    results: tuple[Result, ...]
    candidates: int = 0
    filters: tuple[str, ...] = ()
    more: bool = False
    note: str | None = None

    def to_json(self) -> dict:
        return {
            "category": self.category,
            "categories": [{"category": c, "p": round(float(p), 4)} for c, p in self.categories],
            "attributes": [a.to_json() for a in self.attributes],
            "roi": list(self.box),
            "fallback": self.fallback,
            "searched": [{"category": c, "p": round(float(p), 4)} for c, p in self.searched],
            "candidates": self.candidates,
            "filters": list(self.filters),
        }


@dataclass(frozen=True)
class Answer:
    """A search's answer: the query as understood, its garments (``garment`` is the one answered,
    the likeliest unless a re-run picked another), notes and timings."""

    query_id: str
    option: str
    narrowing: Narrowing
    garments: tuple[Garment, ...]
    garment: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def selected(self) -> Garment:
        return self.garments[self.garment]

    @property
    def results(self) -> tuple[Result, ...]:
        return self.selected.results

    def to_json(self) -> dict:
        """``query`` (the answered garment as understood), its ``results``, and every garment with its own."""
        g = self.selected
        query = {"id": self.query_id, "option": self.option, **g.to_json()}
        query.update(
            offset=self.narrowing.offset,
            more=g.more,
            note=g.note,
            timings_ms=dict(self.timings_ms),
            garment=self.garment,
        )
        garments = [
            {"garment": n, **x.to_json(), "more": x.more, "note": x.note, "results": [r.to_json() for r in x.results]}
            for n, x in enumerate(self.garments)
        ]
        return {"query": query, "results": [r.to_json() for r in g.results], "garments": garments}
