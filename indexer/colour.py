"""Colour histograms of a garment's region: HSV bins plus grey bins, background dropped.

Chromatic pixels fall into ``h_bins x s_bins x v_bins`` HSV bins; unsaturated pixels into
``grey_bins`` bins by value alone (their hue is noise). Near-white unsaturated pixels are the
studio background of a product shot and are dropped (WDR's trick); when that would drop
everything, the garment itself is white and all pixels count.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColourConfig:
    h_bins: int = 8
    s_bins: int = 4
    v_bins: int = 4
    grey_bins: int = 4
    grey_saturation: float = 0.15  # below this saturation a pixel is grey
    background_saturation: float = 0.10  # background: saturation below this ...
    background_value: float = 0.90  # ... and value above this
    max_side: int = 96  # the region is shrunk to this first: the histogram needs no detail

    def __post_init__(self):
        for name in ("h_bins", "s_bins", "v_bins", "grey_bins", "max_side"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"colour {name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("grey_saturation", "background_saturation", "background_value"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"colour {name} must lie in [0, 1], got {getattr(self, name)!r}")

    @property
    def bins(self) -> int:
        return self.h_bins * self.s_bins * self.v_bins + self.grey_bins

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ColourConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def colour_histogram(image: Image.Image | np.ndarray, cfg: ColourConfig = ColourConfig()) -> np.ndarray:
    """The L1-normalised histogram (``cfg.bins`` values, float16) of an RGB image or region.

    Args:
        image: a PIL image or an ``(H, W, 3)`` uint8 RGB array (already cropped to the ROI).
    """
    rgb = np.asarray(image.convert("RGB"), np.uint8) if isinstance(image, Image.Image) else np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    if max(rgb.shape[:2]) > cfg.max_side:
        scale = cfg.max_side / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if rgb.size == 0:
        raise ValueError("cannot take the colour histogram of an empty region")
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3)
    h = hsv[:, 0].astype(np.int32)  # 0..255 around the hue circle
    s = hsv[:, 1].astype(np.float32) / 255.0
    v = hsv[:, 2].astype(np.float32) / 255.0
    keep = ~((s < cfg.background_saturation) & (v > cfg.background_value))
    if keep.any():
        h, s, v = h[keep], s[keep], v[keep]
    grey = s < cfg.grey_saturation
    hb = np.minimum(h * cfg.h_bins // 256, cfg.h_bins - 1)
    s_rel = (s - cfg.grey_saturation) / max(1.0 - cfg.grey_saturation, 1e-6)
    sb = np.clip((s_rel * cfg.s_bins).astype(np.int32), 0, cfg.s_bins - 1)
    vb = np.clip((v * cfg.v_bins).astype(np.int32), 0, cfg.v_bins - 1)
    chromatic = (hb * cfg.s_bins + sb) * cfg.v_bins + vb
    gb = np.clip((v * cfg.grey_bins).astype(np.int32), 0, cfg.grey_bins - 1)
    index = np.where(grey, cfg.h_bins * cfg.s_bins * cfg.v_bins + gb, chromatic)
    hist = np.bincount(index, minlength=cfg.bins).astype(np.float32)
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float16)


def swatch_histogram(shades, cfg: ColourConfig = ColourConfig()) -> np.ndarray:
    """The histogram of a colour name: the mean of ``colour_histogram`` over its RGB ``shades``
    (``Schema.colour_swatches``), so it is binned exactly as a garment's region is.

    Each shade is taken as a uniform patch: a white one is then the garment itself, not background.
    """
    shades = [tuple(int(v) for v in s) for s in shades]
    if not shades:
        raise ValueError("a colour needs at least one shade")
    patches = [colour_histogram(np.full((8, 8, 3), s, np.uint8), cfg).astype(np.float32) for s in shades]
    return (np.mean(patches, axis=0)).astype(np.float16)


def colour_bin_name(index: int, cfg: ColourConfig = ColourConfig()) -> str:
    """A readable name of bin ``index`` (for tests and debugging): ``h3 s1 v2`` or ``grey2``."""
    chroma = cfg.h_bins * cfg.s_bins * cfg.v_bins
    if not 0 <= index < cfg.bins:
        raise ValueError(f"colour bin {index} is out of range 0..{cfg.bins - 1}")
    if index >= chroma:
        return f"grey{index - chroma}"
    hb, rest = divmod(index, cfg.s_bins * cfg.v_bins)
    sb, vb = divmod(rest, cfg.v_bins)
    return f"h{hb} s{sb} v{vb}"
