"""Guided garment detection: the ROI of the shopper's (or seller's) category, or a flagged fallback.

Without a guide every ROI above the threshold is returned, best first, named with the category
the detector gave it. With a guide the detector looks for the guide's garment and names what it
finds after the guide (``guidance``):

- ``"ranked"`` (the default): boxes of the guide's great-category (a "blouse" guide looks at
  every top), the one the detector finds likeliest to be the guide's category scored with the
  probability of its great-category, the others discounted by how much less likely they are to
  be it. One top in the photo: it is the blouse, whatever top the detector took it for; a
  T-shirt beside a shirt: the detector tells which is the T-shirt.
- ``"great_category"``: every box of the guide's great-category, scored with its probability.
- ``"category"``: only boxes the detector itself gave the guide's category, with that probability.

The best remaining ROI is the ROI; when none clears the threshold the detection says so
(``fallback``) and its ``box`` is the whole image.

The backbone and its FPN, and the box head with its predictor, may run on ONNX Runtime
(``GarmentDetector.load(runtime="onnx")``, the graphs exported by ``export_onnx``), the box head's
fully connected layers in int8, the backbone in int8 too where the export was given calibration
photos (its FPN stays in float); torchvision's resizing, RPN, RoI pooling and NMS stay in torch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.ops import box_iou, nms

from detector.model import (
    GUIDANCE,
    DetectorConfig,
    build_detector,
    class_groups,
    class_names,
    fold_batch_norm,
    great_categories,
)
from foundation.boxes import MAX_GARMENTS
from foundation.devices import parse_device
from foundation.modelfiles import ModelError, Preprocess, load_model
from foundation.runtime import Graph, check_runtime, export_graph, open_graph, quantize_calibrated
from foundation.schema import Schema, default_schema

# RoI pooling's samples per bin side at inference (torchvision's default, which training keeps: 2).
# One sample a bin costs a quarter of the bilinear reads: the RoI pooling of 100 proposals went from
# ~18 to ~5-7 ms an image on one thread, and on ccp val (benchmarks/detector_head.py) every Table 3
# figure stayed within 0.01 (guided mAP@.5 0.808 -> 0.816, class-agnostic 0.655 -> 0.654).
ROI_SAMPLING_RATIO = 1

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ROI:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the input image
    category: str
    score: float


WITHIN_IOU = 0.5  # a detected box is the drawn rectangle's garment when they overlap this much
GARMENT_IOU = 0.5  # two boxes of any classes overlapping this much are one garment (cross-class suppression)


@dataclass(frozen=True)
class Raw:
    """What the model returns for one image (see ``detector.model.GroupedRoIHeads``)."""

    rois: list[ROI]  # category = a schema category, score = its probability
    great: list[ROI] = field(default_factory=list)  # category = a great-category, score = its probability
    ranked: list[ROI] = field(default_factory=list)  # category = a schema category, ranked in its great-category


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
    being the schema's ``category_names[i]`` and class ``C + g`` the great-category
    ``great_categories(schema)[g]``; a model trained on another schema is refused. The ImageNet
    file is not needed: the weights come from the checkpoint.
    """
    schema = schema or default_schema()
    ckpt = load_model(models_dir, "detector", schema=schema)
    cfg = DetectorConfig(**ckpt["config"]["model"])
    model = build_detector(cfg, num_classes=len(class_names(schema)), groups=class_groups(schema), imagenet_file=False)
    try:
        model.load_state_dict(ckpt["state_dicts"]["model"])
    except RuntimeError as exc:
        raise ModelError(f"the detector in {models_dir} does not match its config: {exc}") from exc
    return model.eval().to(parse_device(device)), Preprocess.from_saved(ckpt["preprocessing"])


# the FPN backbone: a padded batch (N, 3, H, W) -> one output per level, "level_<torchvision's key>"
BACKBONE_GRAPH = Graph("detector", "backbone", outputs=(), spatial=True)
LEVEL = "level_"
# the box head and its predictor: pooled proposals (N, C, 7, 7) -> class logits, box regression.
# Its first fully connected layer (C*49 -> 512 for each of 100 proposals) was the detector's
# costliest op after the backbone; in int8 it went from 11.7 (torch) to 3.9 ms a photo on one thread
# (benchmarks/runtime_bench.py), and Table 3 on ccp val (benchmarks/detector_head.py) moved by at
# most 0.008 (class-agnostic mAP@.5 0.652 -> 0.651, guided 0.799 -> 0.801).
BOX_GRAPH = Graph("detector", "boxes-int8", outputs=("class_logits", "box_regression"), input="rois", int8=True)
# the backbone in int8, calibrated on photos given to the export; its FPN's convolutions stay in
# float. Calibrated on 100 train photos, Table 3 on ccp val stayed within 0.01 of torch's
# (class-agnostic mAP@.5 0.652 -> 0.651, guided 0.799 -> 0.808, guided mAP@.8 0.279 -> 0.271;
# benchmarks/detector_head.py --onnx) and the detector's pass went from 51.3 to 43.2 ms on one
# thread. A trial with the FPN in int8 too (calibrated otherwise alike) was faster again but lost
# 0.011 of class-agnostic mAP@.5 and 0.017 of guided mAP@.8.
BACKBONE_INT8_GRAPH = Graph("detector", "backbone-int8", outputs=(), spatial=True, calibrated=True)
KEEP_FLOAT = (".fpn.",)  # the weights' names of the int8 backbone's nodes that stay float
GRAPHS = (BACKBONE_GRAPH, BOX_GRAPH, BACKBONE_INT8_GRAPH)


class _Levels(nn.Module):
    """The backbone's levels as a tuple, for the exporter (an ONNX graph's outputs are a list)."""

    def __init__(self, backbone: nn.Module, keys: list[str]):
        super().__init__()
        self.backbone, self.keys = backbone, keys

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        return tuple(features[k] for k in self.keys)


class OnnxBackbone(nn.Module):
    """The backbone's graph in the Faster R-CNN's place: the RPN and the box head read its levels by name."""

    def __init__(self, graph: nn.Module, out_channels: int):
        super().__init__()
        self.graph, self.out_channels = graph, out_channels
        self.keys = [name.removeprefix(LEVEL) for name in graph.outputs]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = self.graph(images)
        return OrderedDict(zip(self.keys, out if isinstance(out, tuple) else (out,)))


class _Boxes(nn.Module):
    """The box head and its predictor as one module, for the exporter."""

    def __init__(self, head: nn.Module, predictor: nn.Module):
        super().__init__()
        self.head, self.predictor = head, predictor

    def forward(self, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictor(self.head(rois))


def export_onnx(
    models_dir: str | Path, *, schema: Schema | None = None, calibration: Sequence[Image.Image] = ()
) -> list[Path]:
    """Export the saved detector's backbone (batch norm folded, as it runs) and its box head as their
    ONNX graphs, cached in ``models_dir``; the backbone's batch, height and width vary, the box
    head's number of proposals. With ``calibration`` photos (the shop's own, as the detector sees
    them), the backbone's int8 graph too, its activations' ranges taken on them."""
    model, preprocess = load(models_dir, schema=schema)
    fold_batch_norm(model)
    height = -(-model.transform.min_size[0] // 32) * 32  # a padded size the transform gives
    example = torch.zeros(2, 3, height, height + 32)  # unequal sides: the exporter must not tie them
    with torch.inference_mode():
        levels = model.backbone(example[:1])
    graph = replace(BACKBONE_GRAPH, outputs=tuple(LEVEL + k for k in levels))
    paths = [export_graph(_Levels(model.backbone, list(levels)), example, graph, models_dir)]
    side = model.roi_heads.box_roi_pool.output_size  # (7, 7)
    rois = torch.randn(2, model.backbone.out_channels, *side, generator=torch.Generator().manual_seed(0))
    heads = model.roi_heads
    paths.append(export_graph(_Boxes(heads.box_head, heads.box_predictor), rois, BOX_GRAPH, models_dir))
    if calibration:
        with torch.inference_mode():  # each photo as the backbone gets it: resized, normalized, padded
            inputs = [model.transform([preprocess(im)])[0].tensors for im in calibration]
        paths.append(quantize_calibrated(paths[0], BACKBONE_INT8_GRAPH, models_dir, inputs, keep_float=KEEP_FLOAT))
    return paths


def select(rois: list[ROI], guide: str | None, size: tuple[int, int], score_threshold: float) -> Detection:
    """The Detection of scored ROIs (any order) under an optional guide category."""
    kept = sorted(
        (r for r in rois if r.score >= score_threshold and (guide is None or r.category == guide)),
        key=lambda r: r.score,
        reverse=True,
    )
    best = kept[0] if kept else None
    return Detection(rois=kept, roi=best, fallback=best is None, size=size)


def guided_rois(raw: Raw, guide: str, guidance: str, schema: Schema) -> list[ROI]:
    """The ROIs a guided detector considers for ``guide``, named with the guide's category."""
    if guidance == "category":
        return [r for r in raw.rois if r.category == guide]
    if guidance == "ranked":
        return [r for r in raw.ranked if r.category == guide]
    great = schema.great_category(guide)
    return [ROI(r.box, guide, r.score) for r in raw.great if r.category == great]


def set_roi_sampling(model, ratio: int) -> None:
    """RoI pooling of ``model`` samples ``ratio`` times a bin side (where it has such a pooler)."""
    if ratio < 1:
        raise ValueError(f"roi_sampling_ratio must be at least 1, got {ratio!r}")
    pooler = getattr(model.roi_heads, "box_roi_pool", None)
    if pooler is not None and hasattr(pooler, "sampling_ratio"):
        pooler.sampling_ratio = ratio


class GarmentDetector:
    """A trained detector plus its preprocessing; ``detect`` batches images."""

    def __init__(
        self,
        model,
        *,
        score_threshold: float = 0.3,
        device: str = "cpu",
        preprocess: Preprocess | None = None,
        guidance: str = "ranked",
        schema: Schema | None = None,
    ):
        """``model``: a detector built for ``schema`` (``detector.model.class_names(schema)`` its classes)."""
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {score_threshold!r}")
        if guidance not in GUIDANCE:
            raise ValueError(f"unknown guidance {guidance!r}; choose one of {', '.join(GUIDANCE)}")
        self.device = parse_device(device)
        self.model = model.eval().to(self.device)
        self.schema = schema or default_schema()
        self.classes = class_names(self.schema)
        self.greats = great_categories(self.schema)
        self.score_threshold = score_threshold
        self.guidance = guidance
        self.preprocess = preprocess or Preprocess()  # RGB in [0, 1]: the model resizes itself

    @classmethod
    def load(
        cls,
        models_dir: str | Path,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        score_threshold: float = 0.3,
        guidance: str = "ranked",
        runtime: str = "torch",
    ) -> GarmentDetector:
        """The detector saved as ``models_dir/detector.pt``, its batch norm folded and its RoI
        pooling sampled ``ROI_SAMPLING_RATIO`` times a bin side, for speed; ``runtime="onnx"``: its
        backbone and its box head are the graphs ``export_onnx`` cached (the backbone's int8 graph
        where it was calibrated)."""
        check_runtime(runtime, device)
        model, preprocess = load(models_dir, device=device, schema=schema)
        fold_batch_norm(model)
        set_roi_sampling(model, ROI_SAMPLING_RATIO)
        if runtime == "onnx":
            int8 = BACKBONE_INT8_GRAPH.path(models_dir).is_file()
            backbone = open_graph(BACKBONE_INT8_GRAPH if int8 else BACKBONE_GRAPH, models_dir)
            model.backbone = OnnxBackbone(backbone, model.backbone.out_channels)
            # the graph gives the predictor's pair: RoIHeads calls box_predictor(box_head(x))
            model.roi_heads.box_head = nn.Identity()
            model.roi_heads.box_predictor = open_graph(BOX_GRAPH, models_dir)
        return cls(
            model,
            score_threshold=score_threshold,
            device=device,
            preprocess=preprocess,
            guidance=guidance,
            schema=schema,
        )

    @classmethod
    def from_model(
        cls,
        model,
        *,
        schema: Schema | None = None,
        score_threshold: float = 0.3,
        device: str = "cpu",
        guidance: str = "ranked",
    ):
        return cls(
            model,
            score_threshold=score_threshold,
            device=device,
            guidance=guidance,
            schema=schema,
        )

    @torch.inference_mode()
    def raw(self, images) -> list[Raw]:
        """Every ROI the model returns for each image (scores from torchvision's floor upwards)."""
        tensors = [self.preprocess(im).to(self.device) for im in images]
        outputs = self.model(tensors)
        n = len(self.classes)
        result = []
        for out in outputs:
            boxes, labels, scores = (
                out["boxes"].cpu().tolist(),
                out["labels"].cpu().tolist(),
                out["scores"].cpu().tolist(),
            )
            rois, great, ranked = [], [], []
            g = len(self.greats)
            for b, lab, s in zip(boxes, labels, scores):
                box = tuple(float(v) for v in b)
                if 0 < lab < n:
                    rois.append(ROI(box, self.classes[lab], float(s)))
                elif n <= lab < n + g:
                    great.append(ROI(box, self.greats[lab - n], float(s)))
                elif lab >= n + g:
                    ranked.append(ROI(box, self.classes[lab - n - g + 1], float(s)))
            result.append(Raw(rois, great, ranked))
        return result

    def guided(self, raw: Raw, guide: str) -> list[ROI]:
        return guided_rois(raw, guide, self.guidance, self.schema)

    def presence(self, raw: Raw, within: tuple[float, float, float, float] | None = None) -> dict[str, float]:
        """Per category, the best score the guided detector gives a box of it in the photo (0 when none):
        how sure the detector is that such a garment is there, whichever one it is. With ``within``
        (a drawn rectangle), only boxes that overlap it at IoU >= ``WITHIN_IOU`` count."""
        out = {}
        for c in self.classes[1:]:
            rois = self.guided(raw, c)
            if within is not None and rois:
                iou = box_iou(torch.tensor([r.box for r in rois]), torch.tensor([within], dtype=torch.float32))
                rois = [r for r, v in zip(rois, iou[:, 0].tolist()) if v >= WITHIN_IOU]
            out[c] = max((r.score for r in rois), default=0.0)
        return out

    def garments(self, raw: Raw) -> list[ROI]:
        """The photo's garments: one box per garment, whatever class found it, best first.

        Every box of a great-category head (tops, bottoms, ...) and of a category head above the
        threshold is a candidate, named with its great-category; boxes that overlap a better one at
        IoU >= ``GARMENT_IOU`` are the same garment (class-agnostic non-maximum suppression). The
        crop reader says which category of the great-category it is."""
        great_of = self.schema.great_category
        found = [r for r in raw.great if r.score >= self.score_threshold]
        found += [ROI(r.box, great_of(r.category), r.score) for r in raw.rois if r.score >= self.score_threshold]
        if not found:
            return []
        boxes = torch.tensor([r.box for r in found], dtype=torch.float32)
        keep = nms(boxes, torch.tensor([r.score for r in found]), GARMENT_IOU).tolist()
        return [found[i] for i in keep[:MAX_GARMENTS]]

    def choose(self, raw: Raw, guide: str | None, size: tuple[int, int]) -> Detection:
        """The detection of ``raw`` (one image's, of ``size``) for ``guide`` (None: non-guided)."""
        return select(raw.rois if guide is None else self.guided(raw, guide), guide, size, self.score_threshold)

    def detect(self, images, guides: list[str | None] | None = None) -> list[Detection]:
        """One Detection per image; ``guides[i]`` (a schema category or None) guides image i's ROI."""
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
        return [self.choose(raw, g, im.size) for raw, g, im in zip(self.raw(images), guides, images)]
