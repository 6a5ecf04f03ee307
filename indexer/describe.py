"""describe(): image (+ category guide, + rectangle) -> attributes, ROI, appearance code, colour.

One code path for indexing and for queries, batched for throughput:

1. category: the guide (the seller's text at indexing, the shopper's pick at query time), else
   the attribute model's most likely category (auto);
2. attributes: guided decoding with that category; both read the rectangle's crop when one is
   drawn (it says which garment is meant), else the whole photo;
3. ROI: the rectangle given, else the guided detector's best box of that category, else the
   whole image (flagged ``fallback``);
4. the binarized GoogLeNet code and the HSV colour histogram of the ROI.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from appearance.model import AppearanceCoder
from foundation.schema import Schema, default_schema
from indexer.colour import ColourConfig, colour_histogram
from indexer.description import Description

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def _int_box(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
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


class Describer:
    """The attribute predictor, the detector, the appearance coder and colour settings, built once."""

    def __init__(
        self,
        *,
        predictor,
        detector,
        coder: AppearanceCoder,
        colour: ColourConfig | None = None,
        schema: Schema | None = None,
    ):
        self.predictor = predictor
        self.detector = detector
        self.coder = coder
        self.colour = colour or ColourConfig()
        self.schema = schema or default_schema()

    @classmethod
    def load(
        cls,
        models_dir: str | Path,
        *,
        device: str = "cpu",
        colour: ColourConfig | None = None,
        schema: Schema | None = None,
    ) -> Describer:
        """The three models of ``models_dir`` (attributes.pt, detector.pt, appearance.pt)."""
        models_dir = Path(models_dir)
        if not models_dir.is_dir():
            raise FileNotFoundError(f"no models directory at {models_dir}")
        schema = schema or default_schema()
        coder = AppearanceCoder.load(models_dir, device=device, schema=schema)  # the cheapest to check first
        from attributes.predict import AttributePredictor

        predictor = AttributePredictor.load(models_dir, device=device, schema=schema)
        from detector.predict import GarmentDetector

        detector = GarmentDetector.load(models_dir, device=device, schema=schema)
        return cls(predictor=predictor, detector=detector, coder=coder, colour=colour or ColourConfig(), schema=schema)

    @property
    def code_bytes(self) -> int:
        return self.coder.code_bytes

    def describe(
        self,
        images: Sequence[Image.Image],
        guides: Sequence[str | None] | None = None,
        boxes: Sequence[Box | None] | None = None,
    ) -> list[Description]:
        """Describe a batch of RGB images.

        Args:
            images: PIL images (converted to RGB).
            guides: per image, a schema category or None (auto).
            boxes: per image, ``[x0, y0, x1, y1]`` in pixels of that image, or None (detector).
        """
        n = len(images)
        if n == 0:
            return []
        guides = list(guides) if guides is not None else [None] * n
        boxes = list(boxes) if boxes is not None else [None] * n
        if len(guides) != n or len(boxes) != n:
            raise ValueError(f"got {n} images but {len(guides)} guides and {len(boxes)} boxes")
        guides = [self.schema.check_category(g) if g else None for g in guides]
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        t: dict[str, float] = {}

        rois: list = [None] * n
        for i, b in enumerate(boxes):
            if b is not None:
                rois[i] = _int_box(b, images[i].size)

        # 1-2. category and attributes (of the rectangle when one is drawn: it says which garment)
        t0 = time.perf_counter()
        seen = [images[i].crop(rois[i]) if rois[i] is not None else images[i] for i in range(n)]
        preds = self.predictor.predict(seen, guides)
        categories = [guides[i] or preds[i].category for i in range(n)]
        t["attributes"] = time.perf_counter() - t0

        # 3. ROI: the rectangle, else the guided detector, else the whole image
        t0 = time.perf_counter()
        fallback = [False] * n
        need = [i for i in range(n) if rois[i] is None]
        if need:
            for i, det in zip(need, self.detector.detect([images[i] for i in need], [categories[i] for i in need])):
                fallback[i] = bool(det.fallback)
                rois[i] = _int_box(det.box, images[i].size) if not det.fallback else (0, 0, *images[i].size)
        crops = [seen[i] if boxes[i] is not None else images[i].crop(rois[i]) for i in range(n)]
        t["detector"] = time.perf_counter() - t0

        # 4. appearance code and colour of the ROI
        t0 = time.perf_counter()
        codes = self.coder.encode(crops)
        t["appearance"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        colours = [colour_histogram(c, self.colour) for c in crops]
        t["colour"] = time.perf_counter() - t0

        per_image = {k: round(v * 1e3 / n, 3) for k, v in t.items()}
        out = []
        for i in range(n):
            p = preds[i]
            out.append(
                Description(
                    category=categories[i],
                    attributes={g: (str(v), float(pr)) for g, (v, pr) in p.attributes.items()},
                    categories=[(str(c), float(pr)) for c, pr in p.categories],
                    roi=tuple(int(v) for v in rois[i]),
                    fallback=fallback[i],
                    code=codes[i],
                    colour=colours[i],
                    timings_ms=dict(per_image),
                )
            )
        return out
