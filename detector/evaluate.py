"""The paper's Table 3: mAP at IoU 0.5 ... 0.9, guided vs non-guided (torchmetrics), fallback rate, latency.

Guided: for each category present in an image's ground truth, the detector is guided by that
category, so ROIs of categories absent from the image are never returned (the false positives
guidance removes). Non-guided: every ROI is scored. The fallback rate is the share of
(image, present category) pairs where the guided detector found nothing above its threshold.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torchmetrics.detection import MeanAveragePrecision
from tqdm import tqdm

from detector.data import products_with_boxes
from detector.predict import GarmentDetector, select
from foundation.images import load_image
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

IOUS = (0.5, 0.6, 0.7, 0.8, 0.9)


def _metric() -> dict[float, MeanAveragePrecision]:
    return {t: MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[t]) for t in IOUS}


def _prediction(rois, index) -> dict:
    return {
        "boxes": torch.tensor([r.box for r in rois], dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor([r.score for r in rois], dtype=torch.float32),
        "labels": torch.tensor([index[r.category] for r in rois], dtype=torch.int64),
    }


def evaluate_model(
    detector: GarmentDetector,
    dump: str | Path,
    *,
    schema: Schema | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Table 3 figures of ``detector`` on the boxes of ``dump`` (its first ``limit`` images)."""
    schema = schema or default_schema()
    products = products_with_boxes(dump, schema=schema)[:limit]
    index = {c: i for i, c in enumerate(detector.classes)}
    metrics = {"non_guided": _metric(), "guided": _metric()}
    guided_queries = fallbacks = 0
    seconds = 0.0
    for p in tqdm(products, desc="detector evaluation", unit="img", disable=not progress):
        image = load_image(p.image)
        t0 = time.perf_counter()
        rois = detector.raw([image])[0]  # batch 1: the latency a single query sees
        seconds += time.perf_counter() - t0
        present = sorted({b.category for b in p.boxes})
        guided = [r for r in rois if r.category in present]
        for g in present:
            guided_queries += 1
            fallbacks += select(rois, g, image.size, detector.score_threshold).fallback
        target = [
            {
                "boxes": torch.tensor([b[:4] for b in p.boxes], dtype=torch.float32),
                "labels": torch.tensor([index[b.category] for b in p.boxes], dtype=torch.int64),
            }
        ]
        for name, kept in (("non_guided", rois), ("guided", guided)):
            for m in metrics[name].values():
                m.update([_prediction(kept, index)], target)
    table = {
        name: {f"map@{t}": round(float(m.compute()["map"]), 4) for t, m in ms.items()} for name, ms in metrics.items()
    }
    return {
        **table,
        "images": len(products),
        "guided_queries": guided_queries,
        "fallback_rate": round(fallbacks / max(1, guided_queries), 4),
        "ms_per_image": round(1000 * seconds / max(1, len(products)), 1),
        "score_threshold": detector.score_threshold,
    }


def evaluate_detector(
    dump: str | Path,
    models_dir: str | Path,
    *,
    limit: int | None = None,
    score_threshold: float = 0.3,
    progress: bool = True,
    schema: Schema | None = None,
) -> dict:
    """Table 3 for the detector saved in ``models_dir`` on ``dump``'s boxes."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    detector = GarmentDetector.load(models_dir, schema=schema, score_threshold=score_threshold)
    return evaluate_model(detector, dump, schema=schema, limit=limit, progress=progress)


def format_report(result: dict) -> str:
    head = "IoU      " + "  ".join(f"{t:>5}" for t in IOUS)
    lines = [f"Detector mAP on {result['images']} images (torchmetrics)", head]
    for name in ("non_guided", "guided"):
        lines.append(f"{name:<9}" + "  ".join(f"{result[name][f'map@{t}']:5.3f}" for t in IOUS))
    lines.append(
        f"fallback rate (guided, score >= {result['score_threshold']}): {result['fallback_rate']:.3f} "
        f"of {result['guided_queries']} queries"
    )
    lines.append(f"latency: {result['ms_per_image']:.1f} ms/image (batch 1)")
    return "\n".join(lines)
