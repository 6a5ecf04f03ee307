"""Measuring appearance codes: bit entropy, category mAP, float features against binary codes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from appearance.model import DIMS, AppearanceCoder


def bit_entropy(codes: np.ndarray) -> dict:
    """Mean and minimum per-bit entropy (bits) and the share of set bits of packed codes."""
    bits = np.unpackbits(np.asarray(codes, np.uint8), axis=1)[:, :DIMS].astype(np.float64)
    p = bits.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0))
    return {
        "mean_entropy": float(h.mean()),
        "min_entropy": float(h.min()),
        "ones_share": float(p.mean()),
        "dead_bits": int((h < 0.1).sum()),
    }


def retrieval_map(scores: np.ndarray, labels: np.ndarray, *, top_k: int | None = None) -> float:
    """Mean average precision of each row's ranking (``scores``: (Q, N), higher is closer).

    Row ``q`` is a query against all items; item ``q`` itself is excluded. Relevant: same label.
    """
    from torchmetrics.retrieval import RetrievalMAP

    q = scores.shape[0]
    mask = ~np.eye(q, scores.shape[1], dtype=bool)
    flat = scores[mask].astype(np.float64)
    # torchmetrics ranks negative scores wrongly (all zero AP): shift into (0, inf), order unchanged
    preds = torch.from_numpy(flat - flat.min() + 1.0)
    target = torch.from_numpy((labels[:, None] == labels[None, :])[mask])
    indexes = torch.from_numpy(np.repeat(np.arange(q), mask.sum(1)))
    return float(RetrievalMAP(top_k=top_k)(preds, target, indexes=indexes))


def float_vs_binary(
    coder: AppearanceCoder, images: Sequence[Image.Image], labels: Sequence[str], *, top_k: int | None = None
) -> dict:
    """Category mAP of the same queries ranked by float features (L2) and by binary codes (Hamming)."""
    feats = coder.features(images)
    codes = coder.binarize(feats)
    lab = np.asarray(labels)
    sq = (feats**2).sum(1)
    l2 = sq[:, None] + sq[None, :] - 2 * feats @ feats.T
    centred = feats - coder.median
    cn = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    bits = np.unpackbits(codes, axis=1)[:, :DIMS].astype(np.float32)
    hamming = bits @ (1 - bits).T + (1 - bits) @ bits.T
    return {
        "queries": int(len(lab)),
        "map_float_l2": retrieval_map(-l2, lab, top_k=top_k),
        "map_float_centred_cosine": retrieval_map(cn @ cn.T, lab, top_k=top_k),
        "map_binary_hamming": retrieval_map(-hamming, lab, top_k=top_k),
        **{f"code_{k}": v for k, v in bit_entropy(codes).items()},
    }
