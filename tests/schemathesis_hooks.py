"""Schemathesis hooks for ``tests/test_schemathesis.py`` (loaded through ``SCHEMATHESIS_HOOKS``).

Two things a generator cannot know from ``webui/openapi.json`` alone:

* what a photo is. Every ``format: binary`` value becomes a real small photo: one of the synthetic
  catalogue's own (``FASHION_SEARCH_FUZZ_PHOTOS``, a folder of JPEGs), or a drawn scene of a few
  coloured garment-like shapes on a ground with noise, as JPEG (sometimes rotated by its EXIF
  orientation tag) or PNG. So positive requests reach decoding and the models, not the 400 that
  random bytes or a 1x1 PNG earn.
* the rules the document states in words because JSON Schema cannot: a rectangle box must lie
  inside the photo sent with it; price_min is not above price_max; a filter names each group once;
  a product's title or category_path must name a fashion category
  unless ``category`` is given; an id is at most 511 bytes in UTF-8. A *positive* case (one that
  obeys the document) is brought inside those rules here, so that a 400 for it is a real
  disagreement between the document and the server; negative cases are left as generated.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from pathlib import Path

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from foundation.images import upright_size
from foundation.schema import default_schema
from foundation.text import category_from_text

MAX_ID_BYTES = 511
WHITESPACE = " \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
MIN_BOX = 4  # pixels each way, as foundation.boxes.parse_box wants


def _catalogue_photos() -> list[bytes]:
    folder = os.environ.get("FASHION_SEARCH_FUZZ_PHOTOS")
    if not folder:
        return []
    return [p.read_bytes() for p in sorted(Path(folder).glob("*.jpg"))[:40]]


@st.composite
def drawn_photos(draw) -> bytes:
    """A small textured scene: garment-like shapes on a ground, with noise, as JPEG or PNG."""
    w = draw(st.integers(24, 320))
    h = draw(st.integers(max(24, w // 4), min(320, w * 4)))
    ground = tuple(draw(st.integers(0, 255)) for _ in range(3))
    im = Image.new("RGB", (w, h), ground)
    pen = ImageDraw.Draw(im)
    for _ in range(draw(st.integers(1, 4))):
        x0, x1 = sorted(draw(st.integers(0, w - 1)) for _ in range(2))
        y0, y1 = sorted(draw(st.integers(0, h - 1)) for _ in range(2))
        colour = tuple(draw(st.integers(0, 255)) for _ in range(3))
        shape = pen.ellipse if draw(st.booleans()) else pen.rectangle
        shape((x0, y0, max(x1, x0 + 6), max(y1, y0 + 6)), fill=colour)
    # Noise that no ground colour drowns: a photo, never the near-uniform placeholder the server refuses.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = np.asarray(im, np.int16) + rng.integers(-24, 25, (h, w, 3))
    pixels[:: max(1, h // 6)] = 255 - pixels[:: max(1, h // 6)]  # a few stripes of texture
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.sampled_from([1, 1, 3, 6, 8]))  # orientation: upright size may swap
        im.save(out, "JPEG", quality=draw(st.integers(50, 95)), exif=exif)
    else:
        im.save(out, "PNG")
    return out.getvalue()


def photos() -> st.SearchStrategy[bytes]:
    catalogue = _catalogue_photos()
    return st.one_of(st.sampled_from(catalogue), drawn_photos()) if catalogue else drawn_photos()


schemathesis.openapi.format("binary", photos())


def _positive(case) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _image_bytes(value) -> bytes | None:
    data = getattr(value, "data", value)
    return data if isinstance(data, bytes) else None


def _box_inside(box: str, size: tuple[int, int]) -> str:
    """``box`` when it is a box inside ``size``; otherwise one made from its numbers that is."""
    w, h = size
    try:
        x0, y0, x1, y1 = (float(v) for v in box.replace(" ", "").split(","))
        if x1 - x0 >= MIN_BOX and y1 - y0 >= MIN_BOX and x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
            return box
    except ValueError:
        x0 = y0 = x1 = y1 = 0.0
    fold = [int(abs(v)) if np.isfinite(v) else 0 for v in (x0, y0, x1, y1)]
    left = fold[0] % (w - MIN_BOX + 1)
    top = fold[1] % (h - MIN_BOX + 1)
    right = left + MIN_BOX + fold[2] % (w - left - MIN_BOX + 1)
    bottom = top + MIN_BOX + fold[3] % (h - top - MIN_BOX + 1)
    return f"{left},{top},{right},{bottom}"


def _addressable_id(pid: str) -> str:
    """``pid`` cut to at most 511 bytes in UTF-8 (without white space left at its end), and with
    no ``%`` before two hex digits: Schemathesis takes such a path parameter for one already
    percent-encoded and sends it as is, so the server would be asked for another id."""
    pid = re.sub("%(?=[0-9A-Fa-f]{2})", "_", pid)
    while len(pid.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        pid = pid[:-1].rstrip(WHITESPACE)
    return pid if pid not in ("", ".", "..") else "x"


def _in_words(body: dict) -> None:
    """A search's price range the right way up, and each filter group once (the first value kept)."""
    lo, hi = body.get("price_min"), body.get("price_max")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
        body["price_min"], body["price_max"] = hi, lo
    if isinstance(body.get("filter"), list):
        seen: set[str] = set()
        kept = []
        for token in body["filter"]:
            group = str(token).partition("=")[0]
            if group not in seen:
                seen.add(group)
                kept.append(token)
        body["filter"] = kept


@schemathesis.hook
def map_case(context, case):
    if not _positive(case) or not isinstance(case.body, dict) or context.operation is None:
        return case
    body = case.body
    operation = context.operation.label
    if operation == "POST /api/search":
        _in_words(body)
    if operation == "POST /api/search" and body.get("option") == "rectangle" and isinstance(body.get("box"), str):
        data = _image_bytes(body.get("image"))
        if data is not None:
            try:
                size = upright_size(data)
            except ValueError:
                return case
            if min(size) >= MIN_BOX:
                body["box"] = _box_inside(body["box"], size)
    elif operation == "POST /api/products":
        if isinstance(body.get("id"), str):
            body["id"] = _addressable_id(body["id"])
        texts = [body.get(f) if isinstance(body.get(f), str) else None for f in ("category_path", "title")]
        if "category" not in body and category_from_text(*texts) is None:
            names = default_schema().category_names
            seed = zlib.crc32(str(body.get("id")).encode("utf-8", "surrogatepass"))
            body["category"] = names[seed % len(names)]
    return case
