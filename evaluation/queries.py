"""The query sets: composed shop scenes and the ccp street photos."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from evaluation.metrics import SHOP, STREET_GARMENT, STREET_PHOTO, Query, QueryImages
from foundation.schema import Schema, default_schema

if TYPE_CHECKING:
    from evaluation.retrieval import RetrievalEvalConfig

logger = logging.getLogger(__name__)


# -- shop queries -------------------------------------------------------------------------------
def shop_queries(
    products,
    category_of: Mapping[str, str],
    images: QueryImages,
    config: RetrievalEvalConfig,
    *,
    compose=None,
    progress: bool = True,
) -> list[Query]:
    """Composed-scene queries: ``config.queries`` catalogue products (drawn with ``config.seed``), each
    transformed and pasted with 1-2 garments of other categories onto a background by
    ``catalogues.scenes``'s composer.

    The query's target is the source product, its category the product's true one and its box
    the box the composer reports for the pasted target.
    """
    from foundation.images import load_image

    n = config.queries
    if compose is None:
        compose = default_composer()
    usable = [p for p in products if p.id in category_of]
    if not usable:
        raise ValueError("no catalogue product has a known category: no shop queries")
    rng = np.random.default_rng([config.seed, 8])
    chosen = rng.choice(len(usable), size=min(n, len(usable)), replace=False)
    if n > len(usable):
        logger.warning("--queries %d is more than the %d catalogue products: using each once", n, len(usable))
    queries = []
    for qi, i in enumerate(tqdm(sorted(chosen), desc="shop scenes", unit="scene", disable=not progress)):
        target = usable[i]
        others_pool = [j for j, p in enumerate(usable) if category_of[p.id] != category_of[target.id]]
        k = int(rng.integers(1, 3))
        others = (
            [usable[j] for j in rng.choice(others_pool, size=min(k, len(others_pool)), replace=False)]
            if others_pool
            else []
        )
        scene, boxes = compose(load_image(target.photos[0].path), [load_image(o.photos[0].path) for o in others], rng)
        key = f"shop:{qi:04d}"
        images.add_image(key, scene)
        category = category_of[target.id]
        box = tuple(float(v) for v in boxes[0])
        queries.append(Query(f"shop-{qi:04d}", SHOP, key, category, box, target.id, frozenset([category])))
    return queries


def default_composer():
    """``catalogues.scenes``'s composer as ``compose(target, others, rng) -> (scene, boxes)``."""
    try:
        from catalogues import scenes
    except ImportError:
        raise ValueError(
            "the scene composer (indexer/scenes.py) is not installed: the shop query set cannot be "
            "composed; run with --queries 0 for the street set alone"
        ) from None
    return scenes.compose_for_evaluation


# -- street queries -----------------------------------------------------------------------------
def street_queries(
    ccp_dir: str | Path,
    catalogue_categories: Collection[str],
    images: QueryImages,
    config: RetrievalEvalConfig,
    *,
    schema: Schema | None = None,
) -> list[Query]:
    """Street-to-shop queries from the ``config.split`` photos of a ccp-layout folder: one per
    garment box, one per photo.

    A garment is a query when its label maps to a category the catalogue holds and its box is at
    least ``config.min_street_side`` pixels each way with ``config.min_street_pixels`` mask pixels
    (ccp boxes of a few stray pixels are no garment a shopper could mean). The photo query counts
    every mapped garment present as right, whatever its size.
    """
    from catalogues.datasets import ccp_rows

    schema = schema or default_schema()
    catalogue_categories = set(catalogue_categories)
    queries = []
    for rec in ccp_rows(ccp_dir, config.split):
        key = f"ccp:{rec['image']}"
        present, garments = set(), []
        for b in rec.get("boxes", []):
            category = schema.dataset_category("ccp", b["label"])
            if not category or category not in catalogue_categories:
                continue
            present.add(category)
            x0, y0, x1, y1 = (float(v) for v in b["box"])
            side, pixels = min(x1 - x0, y1 - y0), b.get("pixels", math.inf)
            if side >= config.min_street_side and pixels >= config.min_street_pixels:
                garments.append((b["label"], category, (x0, y0, x1, y1)))
        if not present:
            continue
        images.add_path(key, rec["photo"])
        stem = Path(rec["image"]).stem
        queries.append(Query(f"street-{stem}", STREET_PHOTO, key, None, None, None, frozenset(present)))
        for label, category, box in garments:
            queries.append(
                Query(f"street-{stem}-{label}", STREET_GARMENT, key, category, box, None, frozenset([category]))
            )
    return queries
