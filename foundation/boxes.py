"""Rectangles in an image's pixels, ``[x0, y0, x1, y1)``: the one ``Box`` type, parsed and checked
in one place."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from foundation.echo import echo

MAX_GARMENTS = 6  # garments of one photo found and searched at most


class Box(NamedTuple):
    """A rectangle in an image's pixels, ``[x0, y0, x1, y1)``; a garment labelled in a dump also
    names its schema ``category``. The functions here take a ``Box`` or any ``[x0, y0, x1, y1]``
    sequence, and answer the corners as a plain tuple (what PIL's ``crop`` takes)."""

    x0: float
    y0: float
    x1: float
    y1: float
    category: str | None = None


def corners(box: Box | Sequence[float]) -> tuple[float, ...]:
    """The corner numbers of a box: a ``Box``'s four, or a sequence's own (checked by the caller)."""
    return tuple(box[:4]) if isinstance(box, Box) else tuple(box)


def parse_box(box, size: tuple[int, int], *, min_side: float = 4) -> tuple[float, float, float, float]:
    """A rectangle ``x0,y0,x1,y1`` (string or sequence) checked against an image of ``size``."""
    if isinstance(box, str):
        parts = box.replace(" ", "").split(",")
    elif isinstance(box, Sequence):
        parts = list(corners(box))
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


def pixel_box(box: Box | Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box covering ``box``, clamped to the image and at least one pixel wide."""
    w, h = size
    try:
        x0, y0, x1, y1 = (float(v) for v in corners(box))
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
