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


def load_image(source: str | Path | bytes) -> Image.Image:
    """The decoded image as RGB, upright according to its EXIF orientation."""
    im = _open(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"the image is too large (decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image is truncated or corrupt: {exc}") from None
    if min(rgb.size) < 8:
        raise ImageError(f"the image is too small ({rgb.size[0]}x{rgb.size[1]} pixels)")
    return rgb
