"""The paper's Table 3: mAP at IoU 0.5 ... 0.9, guided vs non-guided (torchmetrics), fallback rate, latency.

Guided: for each category present in an image's ground truth, the detector is guided by that
category, as the engine guides it (``GarmentDetector.guided``, by the detector's ``guidance``),
so ROIs of categories absent from the image are never returned (the false positives guidance
removes). ``guided_by`` has the same figures for every guidance (``detector.model.GUIDANCE``).
Non-guided: every ROI is scored with the category the detector gave it. Garments: the boxes auto
offers (``GarmentDetector.garments``: one a garment after cross-class suppression) scored as one
class against every true box, with their recall@0.5: whether finding garments, not naming them,
is what limits auto. The fallback rate is
the share of (image, present category) pairs where the guided detector found nothing above its
threshold. ``recall@0.5``: the share of ground-truth boxes that a guided ROI above the
threshold overlaps at IoU >= 0.5; ``top1@0.5``: the share of guided queries whose ROI (the
best, the one the engine crops) overlaps a box of the guide's category at IoU >= 0.5.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou
from tqdm import tqdm

from detector.data import products_with_boxes
from detector.model import GUIDANCE
from detector.predict import GarmentDetector, guided_rois, select
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


def _garment_prediction(garments) -> dict:
    """The garments found as predictions of one class."""
    return {
        "boxes": torch.tensor([g.box for g in garments], dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor([g.score for g in garments], dtype=torch.float32),
        "labels": torch.zeros(len(garments), dtype=torch.int64),
    }


def _iou(a, b) -> torch.Tensor:
    return box_iou(
        torch.tensor(a, dtype=torch.float32).reshape(-1, 4), torch.tensor(b, dtype=torch.float32).reshape(-1, 4)
    )


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
    non_guided = _metric()
    agnostic = _metric()  # the garments auto offers, whatever their category (``GarmentDetector.garments``)
    offered = 0
    guided = {mode: _metric() for mode in GUIDANCE}
    counts = {mode: dict.fromkeys(("fallbacks", "top1", "found"), 0) for mode in GUIDANCE}
    queries = boxes = 0
    seconds = 0.0
    for p in tqdm(products, desc="detector evaluation", unit="img", disable=not progress):
        image = load_image(p.photos[0].path)
        t0 = time.perf_counter()
        raw = detector.raw([image])[0]  # batch 1: the latency a single query sees
        seconds += time.perf_counter() - t0
        target = [
            {
                "boxes": torch.tensor([b[:4] for b in p.boxes], dtype=torch.float32),
                "labels": torch.tensor([index[b.category] for b in p.boxes], dtype=torch.int64),
            }
        ]
        for m in non_guided.values():
            m.update([_prediction(raw.rois, index)], target)
        garments = detector.garments(raw)
        one = {"labels": torch.zeros(len(p.boxes), dtype=torch.int64), "boxes": target[0]["boxes"]}
        found = _garment_prediction(garments)
        for m in agnostic.values():
            m.update([found], [one])
        if garments:
            offered += int((_iou([g.box for g in garments], [b[:4] for b in p.boxes]) >= 0.5).any(0).sum())
        present = sorted({b.category for b in p.boxes})
        truths = {g: [b[:4] for b in p.boxes if b.category == g] for g in present}
        queries += len(present)
        boxes += len(p.boxes)
        for mode in GUIDANCE:
            kept, count = [], counts[mode]
            for g in present:
                rois = guided_rois(raw, g, mode, schema)
                kept += rois
                det = select(rois, g, image.size, detector.score_threshold)
                count["fallbacks"] += det.fallback
                if det.roi is not None:
                    count["top1"] += bool((_iou([det.roi.box], truths[g]) >= 0.5).any())
                    count["found"] += int((_iou([r.box for r in det.rois], truths[g]) >= 0.5).any(0).sum())
            for m in guided[mode].values():
                m.update([_prediction(kept, index)], target)

    def table(ms):
        return {f"map@{t}": round(float(m.compute()["map"]), 4) for t, m in ms.items()}

    by = {
        mode: {
            **table(guided[mode]),
            "fallback_rate": round(counts[mode]["fallbacks"] / max(1, queries), 4),
            "recall@0.5": round(counts[mode]["found"] / max(1, boxes), 4),
            "top1@0.5": round(counts[mode]["top1"] / max(1, queries), 4),
        }
        for mode in GUIDANCE
    }
    mine = by[detector.guidance]
    return {
        "non_guided": table(non_guided),
        # every garment offered as one class: whether finding garments, not naming them, limits auto
        "garments": {**table(agnostic), "recall@0.5": round(offered / max(1, boxes), 4)},
        "guided": {k: v for k, v in mine.items() if k.startswith("map@")},
        "guided_by": by,
        "images": len(products),
        "guidance": detector.guidance,
        "guided_queries": queries,
        "fallback_rate": mine["fallback_rate"],
        "recall@0.5": mine["recall@0.5"],
        "top1@0.5": mine["top1@0.5"],
        "ms_per_image": round(1000 * seconds / max(1, len(products)), 1),
        "score_threshold": detector.score_threshold,
    }


@dataclass(frozen=True)
class DetectorEvalConfig:
    """How the saved detector is measured."""

    limit: int | None = None  # the dump's first N images with boxes only
    score_threshold: float = 0.3  # of the guided ROI: below it, a fallback
    guidance: str = "ranked"  # how the guide selects ROIs (``detector.model.GUIDANCE``)


def evaluate_detector(
    dump: str | Path,
    models_dir: str | Path,
    config: DetectorEvalConfig = DetectorEvalConfig(),
    *,
    progress: bool = True,
    schema: Schema | None = None,
) -> dict:
    """Table 3 for the detector saved in ``models_dir`` on ``dump``'s boxes."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    detector = GarmentDetector.load(
        models_dir, schema=schema, score_threshold=config.score_threshold, guidance=config.guidance
    )
    return evaluate_model(detector, dump, schema=schema, limit=config.limit, progress=progress)


def format_report(result: dict) -> str:
    head = "IoU                         " + "  ".join(f"{t:>5}" for t in IOUS)
    lines = [f"Detector mAP on {result['images']} images (torchmetrics)", head]
    rows = [("non_guided", result["non_guided"]), (f"guided ({result['guidance']})", result["guided"])]
    if "garments" in result:
        rows.insert(1, ("garments (class-agnostic)", result["garments"]))
    rows += [(f"  guided by {mode}", figures) for mode, figures in result.get("guided_by", {}).items()]
    for name, figures in rows:
        lines.append(f"{name:<28}" + "  ".join(f"{figures[f'map@{t}']:5.3f}" for t in IOUS))
    lines.append(
        f"guided ({result['guidance']}), score >= {result['score_threshold']}: fallback rate "
        f"{result['fallback_rate']:.3f} of {result['guided_queries']} queries, top-1 ROI right (IoU >= 0.5) "
        f"{result['top1@0.5']:.3f}, box recall@0.5 {result['recall@0.5']:.3f}"
    )
    for mode, figures in result.get("guided_by", {}).items():
        lines.append(
            f"  by {mode}: fallback {figures['fallback_rate']:.3f}, top-1 {figures['top1@0.5']:.3f}, "
            f"recall@0.5 {figures['recall@0.5']:.3f}"
        )
    if "garments" in result:
        lines.append(
            f"garments auto offers (one box a garment, any class): recall@0.5 {result['garments']['recall@0.5']:.3f}"
        )
    lines.append(f"latency: {result['ms_per_image']:.1f} ms/image (batch 1)")
    return "\n".join(lines)
