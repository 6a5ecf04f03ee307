"""What happens to a photo before any model sees it: one function for bulk, product add and search.

``prepare_image`` reads the bytes (or a ready image), hashes them, decodes with the
decompression-bomb guard, turns the photo upright by its EXIF orientation, shrinks it to the
working size (so the cost of a request is bounded before any model runs), refuses blank
placeholders and makes the thumbnail. ``guide_category`` is the one category precedence.
``content_hash`` is the one content hash (of a product's photos, its fields and the models): what
decides whether a stored product is current.

Torch-free: the bulk indexer runs ``prepare_image`` in its decode workers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foundation.boxes import Box, corners
from foundation.images import ImageError, load_working_image, make_thumbnail
from foundation.schema import Schema
from foundation.text import category_from_text

WORKING_SIDE = 640  # the longest side the models see; ROIs are mapped back to the original pixels
THUMB_SIZE = 256
BLANK_STD = 2.0  # per-channel standard deviation (0-255) below which an image is a blank placeholder
MAX_ASPECT = 20.0  # longer side over shorter: a 2600x8 strip would shrink to nothing the models can read


@dataclass(frozen=True)
class ImageLimits:
    """The sizes every path uses; defined once so bulk and the API cannot disagree."""

    working_side: int = WORKING_SIDE
    thumb_size: int = THUMB_SIZE

    def __post_init__(self):
        if self.working_side < 32:
            raise ValueError(f"the working side must be at least 32 pixels, got {self.working_side}")
        if self.thumb_size < 16:
            raise ValueError(f"the thumbnail size must be at least 16 pixels, got {self.thumb_size}")


@dataclass
class Prepared:
    """A photo ready for the models."""

    image: Image.Image  # upright RGB, longest side at most the working side
    original_size: tuple[int, int]  # upright (width, height) of the photo as sent
    image_hash: str  # sha256 of the bytes as sent (of the pixels for an image given decoded)
    thumbnail: bytes = b""

    @property
    def scale(self) -> float:
        """Original pixels per working pixel."""
        return self.original_size[0] / self.image.size[0]

    def to_working(self, box: Box | Sequence[float]) -> tuple[float, float, float, float]:
        """A box in the original photo's pixels, in the working image's pixels."""
        sx = self.original_size[0] / self.image.size[0]
        sy = self.original_size[1] / self.image.size[1]
        x0, y0, x1, y1 = corners(box)
        return x0 / sx, y0 / sy, x1 / sx, y1 / sy

    def to_original(self, roi: Sequence[float]) -> tuple[int, int, int, int]:
        """A working-pixel ROI in the original photo's pixels, clamped to it."""
        w, h = self.original_size
        sx, sy = w / self.image.size[0], h / self.image.size[1]
        x0, y0, x1, y1 = roi
        return (
            min(max(int(math.floor(x0 * sx)), 0), w - 1),
            min(max(int(math.floor(y0 * sy)), 0), h - 1),
            min(max(int(math.ceil(x1 * sx)), 1), w),
            min(max(int(math.ceil(y1 * sy)), 1), h),
        )


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def is_blank(image: Image.Image) -> bool:
    """Near-uniform in every channel: a placeholder, not a product photo."""
    small = image.copy()
    small.thumbnail((64, 64))
    # per channel: a red garment on a teal ground can have one uniform grey level
    return float(np.asarray(small, np.float32).reshape(-1, 3).std(0).max()) < BLANK_STD


def prepare_image(
    source: bytes | str | Path | Image.Image,
    *,
    limits: ImageLimits = ImageLimits(),  # noqa: B008 - frozen
    thumbnail: bool = True,
) -> Prepared:
    """Decode, orient, shrink, check and thumbnail one photo.

    Raises:
        ImageError: unreadable, truncated, too large to decode, too small, or blank.
    """
    if isinstance(source, Image.Image):
        rgb = source if source.mode == "RGB" else source.convert("RGB")
        digest = hashlib.sha256(f"{rgb.size}".encode())
        digest.update(rgb.tobytes())
        image_hash = digest.hexdigest()[:32]
        original = rgb.size
        image = rgb.copy()
        image.thumbnail((limits.working_side, limits.working_side), Image.Resampling.BILINEAR)
    else:
        if isinstance(source, (str, Path)):
            try:
                source = Path(source).read_bytes()
            except OSError as exc:
                raise ImageError(f"cannot read the image: {exc.strerror or exc}") from None
        image_hash = bytes_hash(source)
        image, original = load_working_image(source, limits.working_side)
    aspect = max(original) / min(original)
    if aspect > MAX_ASPECT:
        raise ImageError(
            f"the image is {original[0]}x{original[1]} pixels: an aspect ratio of {aspect:.0f}:1 is over {MAX_ASPECT:.0f}:1"
        )
    if is_blank(image):
        raise ImageError("blank or placeholder image (near-uniform)")
    thumb = make_thumbnail(image, limits.thumb_size) if thumbnail else b""
    return Prepared(image=image, original_size=original, image_hash=image_hash, thumbnail=thumb)


def guide_category(
    schema: Schema,
    *,
    explicit: str | None = None,
    texts: Sequence[str] = (),
    label: str | None = None,
) -> str | None:
    """The category that guides the models: the shopper's or seller's explicit pick, else what the
    seller's text says, else a labelled category; None leaves it to the model (auto)."""
    if explicit:
        return schema.check_category(explicit)
    found = category_from_text(*[t for t in texts if t], schema=schema) if any(texts) else None
    if found:
        return found
    if label:
        return schema.check_category(label)
    return None


def content_hash(image_hashes: Sequence[str], fields: Sequence, signature: str) -> str:
    """Every photo's hash (in order), the product's own fields and the models' signature, hashed
    together: what bulk and the API store, and compare to know a product is unchanged."""
    if isinstance(image_hashes, str):
        raise TypeError("content_hash takes a sequence of photo hashes, not one string")
    h = hashlib.sha256(",".join(image_hashes).encode())
    h.update(json.dumps([*fields, signature]).encode())
    return h.hexdigest()[:32]


__all__ = [
    "BLANK_STD",
    "MAX_ASPECT",
    "ImageLimits",
    "Prepared",
    "THUMB_SIZE",
    "WORKING_SIDE",
    "bytes_hash",
    "content_hash",
    "guide_category",
    "is_blank",
    "prepare_image",
]
