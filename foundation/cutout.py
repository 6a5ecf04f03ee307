"""Cutting a garment out of a single-garment shop photo.

``garment_mask`` is OpenCV's GrabCut on a copy shrunk to ``MASK_SIDE`` pixels, initialised with
the photo's 4 % border as sure background (shop photos are framed around the garment), then the
largest connected component with its holes filled; when GrabCut keeps under 5 % of the photo the
inner rectangle is used. The composed detector scenes (``catalogues.scenes``) and the appearance
code's shopper views (``appearance.instance``) both paste garments cut out this way.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

MASK_SIDE = 160


def garment_mask(image: Image.Image, *, border: float = 0.04, iterations: int = 4) -> np.ndarray:
    """Bool ``[H, W]`` mask of the garment in a single-garment photo (GrabCut from the border)."""
    w, h = image.size
    scale = MASK_SIDE / max(w, h)
    small = np.asarray(image.convert("RGB").resize((max(8, round(w * scale)), max(8, round(h * scale)))))
    sh, sw = small.shape[:2]
    bx, by = max(1, round(sw * border)), max(1, round(sh * border))
    rect = (bx, by, sw - 2 * bx, sh - 2 * by)
    m = np.zeros((sh, sw), np.uint8)
    try:
        cv2.grabCut(
            cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
            m,
            rect,
            np.zeros((1, 65)),
            np.zeros((1, 65)),
            iterations,
            cv2.GC_INIT_WITH_RECT,
        )
        fg = np.isin(m, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    except cv2.error:
        fg = np.zeros((sh, sw), np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n > 1:
        fg = (lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
        # fill holes: flood the background from the border, the rest is garment
        flood = np.pad(fg, 1).copy()
        cv2.floodFill(flood, None, (0, 0), 2)
        fg = (flood[1:-1, 1:-1] != 2).astype(np.uint8)
    if fg.mean() < 0.05:
        fg = np.zeros((sh, sw), np.uint8)
        fg[by : sh - by, bx : sw - bx] = 1
    return np.asarray(Image.fromarray(fg * 255).resize((w, h), Image.NEAREST)) > 127
