"""Guided garment detection: the ROI of the shopper's (or seller's) category, or a flagged fallback.

Without a guide every ROI above the threshold is returned, best first. With a guide, ROIs of
other categories are dropped and the best remaining one is the ROI; when none remains the
detection says so (``fallback``) and its ``box`` is the whole image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from detector.model import DetectorConfig, build_detector, class_names
from foundation.devices import parse_device
from foundation.modelfiles import ModelError, Preprocess, load_model
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ROI:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the input image
    category: str
    score: float


@dataclass(frozen=True)
class Detection:
    rois: list[ROI]  # non-guided: every ROI above threshold, best first; guided: only the guide's category
    roi: ROI | None  # the best ROI (of the guide's category when guided); None when nothing cleared the threshold
    fallback: bool  # True when roi is None: callers use the whole image and may show a flag
    size: tuple[int, int]  # (width, height) of the input image

    @property
    def box(self) -> tuple[float, float, float, float]:
        if self.roi is None:
            return (0.0, 0.0, float(self.size[0]), float(self.size[1]))
        return self.roi.box


def load(models_dir: str | Path, *, device: str = "cpu", schema: Schema | None = None) -> tuple[nn.Module, Preprocess]:
    """(Faster R-CNN in eval mode on ``device``, its preprocessing: PIL image -> (3, H, W) in [0, 1]), as saved.

    ``model([preprocess(im) for im in images])`` gives torchvision's detections, class ``i + 1``
    being the schema's ``category_names[i]``; a model trained on another schema is refused.
    """
    schema = schema or default_schema()
    ckpt = load_model(models_dir, "detector", schema=schema)
    cfg = DetectorConfig(**{**ckpt["config"]["model"], "pretrained": None})  # the weights come from the file
    model = build_detector(cfg, num_classes=len(class_names(schema)))
    try:
        model.load_state_dict(ckpt["state_dicts"]["model"])
    except RuntimeError as exc:
        raise ModelError(f"the detector in {models_dir} does not match its config: {exc}") from exc
    return model.eval().to(parse_device(device)), Preprocess.from_saved(ckpt["preprocessing"])


def select(rois: list[ROI], guide: str | None, size: tuple[int, int], score_threshold: float) -> Detection:
    """The Detection of scored ROIs (any order) under an optional guide category."""
    kept = sorted(
        (r for r in rois if r.score >= score_threshold and (guide is None or r.category == guide)),
        key=lambda r: r.score,
        reverse=True,
    )
    best = kept[0] if kept else None
    return Detection(rois=kept, roi=best, fallback=best is None, size=size)


class GarmentDetector:
    """A trained detector plus its preprocessing; ``detect`` batches images."""

    def __init__(
        self,
        model,
        *,
        classes: tuple[str, ...],
        score_threshold: float = 0.3,
        device: str = "cpu",
        preprocess: Preprocess | None = None,
    ):
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {score_threshold!r}")
        self.device = parse_device(device)
        self.model = model.eval().to(self.device)
        self.classes = classes
        self.score_threshold = score_threshold
        self.preprocess = preprocess or Preprocess()  # RGB in [0, 1]: the model resizes itself

    @classmethod
    def load(
        cls, models_dir: str | Path, *, device: str = "cpu", schema: Schema | None = None, score_threshold: float = 0.3
    ) -> GarmentDetector:
        """The detector saved as ``models_dir/detector.pt``."""
        model, preprocess = load(models_dir, device=device, schema=schema)
        return cls(
            model, classes=class_names(schema), score_threshold=score_threshold, device=device, preprocess=preprocess
        )

    @classmethod
    def from_model(cls, model, *, schema: Schema | None = None, score_threshold: float = 0.3, device: str = "cpu"):
        return cls(model, classes=class_names(schema), score_threshold=score_threshold, device=device)

    @torch.inference_mode()
    def raw(self, images) -> list[list[ROI]]:
        """Every ROI the model returns for each image (scores from torchvision's floor upwards)."""
        tensors = [self.preprocess(im).to(self.device) for im in images]
        outputs = self.model(tensors)
        result = []
        for out in outputs:
            boxes, labels, scores = (
                out["boxes"].cpu().tolist(),
                out["labels"].cpu().tolist(),
                out["scores"].cpu().tolist(),
            )
            result.append(
                [
                    ROI(tuple(float(v) for v in b), self.classes[lab], float(s))
                    for b, lab, s in zip(boxes, labels, scores)
                    if lab > 0
                ]
            )
        return result

    def detect(self, images, guides: list[str | None] | None = None) -> list[Detection]:
        """One Detection per image; ``guides[i]`` (a schema category or None) filters image i's ROIs."""
        images = list(images)
        if guides is None:
            guides = [None] * len(images)
        guides = list(guides)
        if len(guides) != len(images):
            raise ValueError(f"got {len(guides)} guides for {len(images)} images")
        for g in guides:
            if g is not None and g not in self.classes[1:]:
                raise ValueError(f"unknown guide category {g!r}; known: {', '.join(self.classes[1:])}")
        if not images:
            return []
        return [select(rois, g, im.size, self.score_threshold) for rois, g, im in zip(self.raw(images), guides, images)]
