"""Opening product and query images safely: one place that turns bad files into clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An image that cannot be used, with the reason in words."""


def _open(source: str | Path | bytes) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise ImageError("the image is empty (0 bytes)")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no image file at {path}")
        if path.stat().st_size == 0:
            raise ImageError(f"the image {path.name} is empty (0 bytes)")
        fp = path
    try:
        # Pillow's decompression-bomb guard stays on; its warning is an error here too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"the image is too large (decompression bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except OSError as exc:
        raise ImageError(f"cannot open the image: {exc}") from None


def image_size(source: str | Path | bytes) -> tuple[int, int]:
    """(width, height) from the header alone, without decoding the pixels."""
    with _open(source) as im:
        return im.size


def upright_size(source: str | Path | bytes) -> tuple[int, int]:
    """(width, height) as the photo is shown, from the header and its EXIF orientation alone."""
    with _open(source) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except (OSError, SyntaxError, ValueError):
            orientation = 1  # an unreadable EXIF block: decoding ignores it too
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_image(source: str | Path | bytes) -> Image.Image:
    """The decoded image as RGB, upright according to its EXIF orientation."""
    return _decode(source, None)[0]


def load_working_image(source: str | Path | bytes, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """The image upright as RGB with its longest side at most ``max_side``, and its upright full size.

    A JPEG is decoded at a reduced scale when that is enough (``Image.draft``), so a
    many-megapixel photo costs about what its working size does.
    """
    return _decode(source, max_side)


def _decode(source: str | Path | bytes, max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    im = _open(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            full = im.size
            if max_side is not None and max(full) > max_side:
                im.draft("RGB", (max_side, max_side))  # JPEG only: DCT scaling to at least this size
            im.load()
            transposed = ImageOps.exif_transpose(im)
            if transposed.size != im.size:  # rotated a quarter turn
                full = (full[1], full[0])
            im = transposed
            rgb = im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"the image is too large (decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image is truncated or corrupt: {exc}") from None
    if min(full) < 8:
        raise ImageError(f"the image is too small ({full[0]}x{full[1]} pixels)")
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return rgb, full


def make_thumbnail(image: Image.Image, size: int = 256) -> bytes:
    """A JPEG of the image, at most ``size`` pixels a side, for the web page."""
    im = image.convert("RGB")
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()
