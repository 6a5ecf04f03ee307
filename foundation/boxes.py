"""Rectangles in an image's pixels, ``[x0, y0, x1, y1)``: parsed and checked in one place."""

from __future__ import annotations

import math
from collections.abc import Sequence

from foundation.echo import echo

Box = tuple[float, float, float, float]


def parse_box(box, size: tuple[int, int], *, min_side: float = 4) -> tuple[float, float, float, float]:
    """A rectangle ``x0,y0,x1,y1`` (string or sequence) checked against an image of ``size``."""
    if isinstance(box, str):
        parts = box.replace(" ", "").split(",")
    elif isinstance(box, Sequence):
        parts = list(box)
    else:
        raise ValueError(f"box must be x0,y0,x1,y1, got {echo(box)}")
    if len(parts) != 4:
        raise ValueError(f"box must have 4 numbers x0,y0,x1,y1, got {echo(box)}")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"box must hold numbers, got {echo(box)}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box must hold finite numbers, got {echo(box)}")
    w, h = size
    if x1 - x0 < min_side or y1 - y0 < min_side:
        raise ValueError(
            f"box {echo(box)} is degenerate: it needs x1 > x0 and y1 > y0, at least {min_side:g} pixels each way"
        )
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(f"box {echo(box)} lies outside the {w}x{h} image")
    return x0, y0, x1, y1


def pixel_box(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box covering ``box``, clamped to the image and at least one pixel wide."""
    w, h = size
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"a box must be four numbers x0, y0, x1, y1, got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"a box must hold finite numbers, got {box!r}")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box!r} is empty or inverted: it needs x1 > x0 and y1 > y0")
    ix0 = min(max(int(math.floor(x0)), 0), w - 1)
    iy0 = min(max(int(math.floor(y0)), 0), h - 1)
    ix1 = max(min(int(math.ceil(x1)), w), ix0 + 1)
    iy1 = max(min(int(math.ceil(y1)), h), iy0 + 1)
    return ix0, iy0, ix1, iy1
