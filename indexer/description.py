"""What describe() says of one image: importable without torch, so the store can read it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Description:
    category: str
    attributes: dict[str, tuple[str, float]]  # group -> (value, probability), schema order
    categories: list[tuple[str, float]]
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
    fallback: bool
    code: np.ndarray  # uint8, packed bits of the binarized GoogLeNet code
    colour: np.ndarray  # float16 HSV histogram, L1-normalised
    timings_ms: dict[str, float] = field(default_factory=dict)
