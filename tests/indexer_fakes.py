"""Small stand-ins for the attribute model and the detector, for the indexer's tests.

The fake predictor reads the category from the image's dominant hue bucket (so auto mode is
deterministic); the fake detector returns a fixed central box of the guide's category, or
nothing when the guide is ``hat`` (to exercise the whole-image fallback).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from foundation.schema import default_schema


@dataclass(frozen=True)
class FakePrediction:
    category: str
    attributes: dict
    categories: list


@dataclass(frozen=True)
class FakeROI:
    box: tuple
    category: str
    score: float


@dataclass(frozen=True)
class FakeDetection:
    rois: list
    roi: FakeROI | None
    fallback: bool
    size: tuple

    @property
    def box(self):
        return self.roi.box if self.roi else (0.0, 0.0, float(self.size[0]), float(self.size[1]))


class FakePredictor:
    AUTO = ("t-shirt", "pants", "dress")

    def __init__(self):
        self.schema = default_schema()
        self.calls = []

    def features(self, images):
        return torch.zeros(len(images), 1)

    def predict(self, images, guides=None, *, beam=1, features=None):
        self.calls.append(list(guides) if guides is not None else None)
        out = []
        for i, im in enumerate(images):
            guide = guides[i] if guides is not None else None
            mean = float(np.asarray(im.convert("L").resize((8, 8))).mean())
            cat = guide or self.AUTO[int(mean) % len(self.AUTO)]
            attrs = {
                "great_category": (self.schema.great_category(cat), 0.99),
                "category": (cat, 0.9 if guide is None else 1.0),
            }
            cats = [(guide, 1.0)] if guide else [(cat, 0.9), ("bag", 0.05)]
            out.append(FakePrediction(cat, attrs, cats))
        return out


class FakeDetector:
    """The detector's protocol: ``raw`` once per photo, ``presence`` of each category, ``choose`` a guide's ROI.

    ``calls`` holds, per ``raw`` call, the guides ``choose`` was asked for; ``present`` is the
    evidence ``presence`` reports (none by default: auto keeps the attribute model's guess).
    """

    def __init__(self, present: dict[str, float] | None = None):
        self.calls = []
        self.present = dict(present or {})
        self.found: list[FakeROI] = []

    def raw(self, images):
        self.calls.append([])
        return [im.size for im in images]

    def presence(self, raw, within=None):
        return dict(self.present)

    def garments(self, raw):
        """The garments ``found`` (ROIs in pixels of the photo, great-category names): none by
        default, so auto describes the whole photo."""
        return list(self.found)

    def choose(self, raw, guide, size):
        self.calls[-1].append(guide)
        w, h = size
        if guide == "hat":
            return FakeDetection([], None, True, (w, h))
        roi = FakeROI((w * 0.25, h * 0.2, w * 0.75, h * 0.9), guide or "t-shirt", 0.9)
        return FakeDetection([roi], roi, False, (w, h))

    def detect(self, images, guides=None):
        guides = list(guides) if guides is not None else [None] * len(images)
        return [self.choose(r, g, im.size) for r, g, im in zip(self.raw(images), guides, images)]


def fake_models(models_dir, *, image_size=32, seed=0):
    """A models directory holding a randomly initialised appearance model (median from noise)."""
    from PIL import Image

    from appearance.model import untrained_coder

    rng = np.random.default_rng(seed)
    calib = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(16)]
    coder = untrained_coder(image_size=image_size, seed=seed, calibration=calib)
    coder.save(models_dir, config={"fake": True})
    return models_dir


def fake_describer(models_dir):
    from appearance.model import AppearanceCoder
    from indexer.describe import Describer

    return Describer(predictor=FakePredictor(), detector=FakeDetector(), coder=AppearanceCoder.load(models_dir))
