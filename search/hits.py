"""What a search of the RAM index answers, and the weights it ranks with (``search.index``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankingConfig:
    w_appearance: float = 2.0  # the three weights: chosen on val, see search.index
    w_colour: float = 0.25
    w_shared: float = 0.0
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
    attributes: tuple[tuple[str, str], ...] = ()  # the product's own (group, value), schema order
    tier: int = 0  # which shortlist of the Hamming order it was re-ranked in (module docstring: Pages)
    photo: int = 0  # which of the product's photos matched (its best)


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    candidates: int  # products in the category after filters
    scanned_bytes: int
    note: str | None = None


def photo_key(image_hash: str) -> int:
    """A 64-bit key of a photo's bytes hash (0 when there is none)."""
    try:
        return int(image_hash[:16], 16) if image_hash else 0
    except ValueError:
        return 0
