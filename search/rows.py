"""Rows of a search index, a row a photo: what the RAM index and the Milvus backend both take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from foundation.schema import Schema


def photo_key(image_hash: str) -> int:
    """A 64-bit key of a photo's bytes hash (0 when there is none)."""
    try:
        return int(image_hash[:16], 16) if image_hash else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class PhotoRows:
    """Photos to add, checked when built.

    Args:
        ids: each row's product id (a product of several photos has a row for each).
        categories: each row's fashion category.
        attributes: each row's attributes, group -> value.
        codes: (n, code_bytes) uint8 packed appearance codes.
        colours: (n, bins) colour histograms.
        photos: each photo's :func:`photo_key` (0: unknown); default all 0.
        prices: each row's product price (None: unknown); default all unknown.
        numbers: which of its product's photos each row is; default all 0.
    """

    ids: Sequence[str]
    categories: Sequence[str]
    attributes: Sequence[Mapping[str, str]]
    codes: np.ndarray
    colours: np.ndarray
    photos: np.ndarray | None = None
    prices: np.ndarray | None = None
    numbers: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.ids)
        set_ = object.__setattr__  # a frozen dataclass normalises its own fields once
        set_(self, "ids", list(self.ids))
        set_(self, "codes", np.ascontiguousarray(self.codes, dtype=np.uint8).reshape(n, -1))
        set_(self, "colours", np.asarray(self.colours).reshape(n, -1))
        photos = np.zeros(n, np.uint64) if self.photos is None else np.asarray(self.photos, np.uint64).reshape(-1)
        prices = [None] * n if self.prices is None else list(self.prices)
        prices = np.array([np.nan if p is None else p for p in prices], np.float32)
        numbers = np.zeros(n, np.uint8) if self.numbers is None else np.asarray(self.numbers, np.uint8).reshape(-1)
        set_(self, "photos", photos)
        set_(self, "prices", prices)
        set_(self, "numbers", numbers)
        if prices.shape != (n,):
            raise ValueError(f"prices must be one per product, got {prices.shape}")
        if not (len(self.categories) == len(self.attributes) == n == self.codes.shape[0] == self.colours.shape[0]):
            raise ValueError("ids, categories, attributes, codes and colours must have the same length")
        if len(set(zip(self.ids, numbers.tolist()))) != n:
            raise ValueError("the (id, photo number) pairs to add must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def check(self, code_bytes: int, colour_bins: int, schema: Schema) -> None:
        """``ValueError`` unless the rows fit an index of these sizes and schema."""
        if len(self) and (self.codes.shape[1] != code_bytes or self.colours.shape[1] != colour_bins):
            raise ValueError(
                f"codes must be {code_bytes} bytes and colours {colour_bins} bins, "
                f"got {self.codes.shape[1]} and {self.colours.shape[1]}"
            )
        for c in set(self.categories):
            schema.check_category(c)
