"""A dump's product regions: the pixels an appearance network learns from."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from foundation.schema import Schema, default_schema
from foundation.text import category_from_text

logger = logging.getLogger(__name__)


def product_region(product, schema: Schema) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """The product's box and category from a dump row: its labelled category, else the seller's text."""
    category = product.attributes.get("category") or category_from_text(
        product.category_path, product.title, schema=schema
    )
    for b in product.boxes:
        if b.category == category:
            return (b.x0, b.y0, b.x1, b.y1), category
    return None, category


def load_regions(
    dump: str | Path, *, size: int, limit: int | None = None, schema: Schema | None = None, progress: bool = True
) -> tuple[list[Image.Image], list[str], list[str]]:
    """The product regions of a dump, shrunk to ``size`` pixels: (images, categories, ids)."""
    from foundation.dump import DumpReport, read_dump
    from foundation.images import ImageError, load_image

    schema = schema or default_schema()
    images, cats, ids = [], [], []
    report = DumpReport()
    for p in tqdm(
        read_dump(dump, schema=schema, report=report, check_images=False),
        desc="regions",
        unit="img",
        disable=not progress,
    ):
        box, category = product_region(p, schema)
        if category is None:
            continue
        try:
            im = load_image(p.photos[0].path)
        except ImageError as exc:
            logger.warning("skipping %s: %s", p.id, exc)
            continue
        if box is not None:
            im = im.crop(tuple(int(round(v)) for v in box))
        im.thumbnail((size, size), Image.Resampling.BILINEAR)
        images.append(im)
        cats.append(category)
        ids.append(p.id)
        if limit and len(images) >= limit:
            break
    if not images:
        raise ValueError(f"no usable product regions in {dump} (need images and a category from text or attributes)")
    return images, cats, ids


def held_out(ids: list[str], share: float) -> np.ndarray:
    """A fixed held-out mask: ``share`` of the ids, chosen by a hash of each."""
    return np.array([hashlib.sha1(i.encode()).digest()[0] < 256 * share for i in ids], bool)
