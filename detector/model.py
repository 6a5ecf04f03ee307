"""The detector model: torchvision's Faster R-CNN over all schema categories jointly.

Class 0 is torchvision's background; class ``i + 1`` is the schema's ``category_names[i]``.
Anchors, RoI pooling and NMS are torchvision's own.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

BACKBONES = ("mobilenet_v3_large_fpn", "resnet50_fpn")


@dataclass(frozen=True)
class DetectorConfig:
    """How the detector is built; stored in its checkpoint.

    Attributes:
        backbone: ``mobilenet_v3_large_fpn`` (CPU default) or ``resnet50_fpn`` (quality).
        min_size / max_size: torchvision's resize of the input (shorter / longer side, pixels).
        pretrained: ``None`` (from scratch) or ``"imagenet"`` (torchvision's ImageNet backbone weights).
        detections_per_image: most boxes kept per image after NMS.
        box_score_thresh: lowest score torchvision returns (callers apply their own threshold on top).
    """

    backbone: str = "mobilenet_v3_large_fpn"
    min_size: int = 320
    max_size: int = 480
    pretrained: str | None = None
    detections_per_image: int = 50
    box_score_thresh: float = 0.01
    box_batch_size_per_image: int = (
        64  # RoIs sampled per training image (torchvision: 512; the box head dominates CPU time)
    )
    rpn_post_nms_top_n_train: int = 300  # proposals kept per training image (torchvision: 2000)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown detector backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.pretrained not in (None, "imagenet"):
            raise ValueError(f"pretrained must be None or 'imagenet', got {self.pretrained!r}")
        if not (32 <= self.min_size <= self.max_size):
            raise ValueError(f"need 32 <= min_size <= max_size, got min_size={self.min_size} max_size={self.max_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def class_names(schema: Schema | None = None) -> tuple[str, ...]:
    """Category of each model class index; index 0 is the background."""
    schema = schema or default_schema()
    return ("__background__", *schema.category_names)


def _imagenet_weights(backbone: str):
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    return (
        MobileNet_V3_Large_Weights.IMAGENET1K_V1
        if backbone == "mobilenet_v3_large_fpn"
        else ResNet50_Weights.IMAGENET1K_V1
    )


def build_detector(cfg: DetectorConfig, *, num_classes: int):
    """A torchvision Faster R-CNN for ``num_classes`` classes (background included).

    Input: a list of float images ``[3, H, W]`` in ``[0, 1]``; targets (training) hold ``boxes``
    ``[N, 4]`` as ``[x0, y0, x1, y1]`` pixels and ``labels`` ``[N]`` int64 in ``1..num_classes-1``.
    ImageNet backbone weights are fetched through torchvision's weights API only when
    ``cfg.pretrained == "imagenet"``; a clear error says when they cannot be had.
    """
    from torchvision.models import detection

    if num_classes < 2:
        raise ValueError(f"num_classes must count the background and at least one category, got {num_classes}")
    builder = {
        "mobilenet_v3_large_fpn": detection.fasterrcnn_mobilenet_v3_large_fpn,
        "resnet50_fpn": detection.fasterrcnn_resnet50_fpn,
    }[cfg.backbone]
    weights_backbone = _imagenet_weights(cfg.backbone) if cfg.pretrained == "imagenet" else None
    kwargs = dict(
        weights=None,
        weights_backbone=weights_backbone,
        num_classes=num_classes,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        box_detections_per_img=cfg.detections_per_image,
        box_score_thresh=cfg.box_score_thresh,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
    )
    if cfg.backbone == "mobilenet_v3_large_fpn":
        kwargs["rpn_score_thresh"] = 0.0  # torchvision's 0.05 starves an untrained RPN of proposals
    try:
        return builder(**kwargs)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a corrupt cache raises RuntimeError
        if weights_backbone is None:
            raise
        raise RuntimeError(
            f"cannot get torchvision's ImageNet weights for {cfg.backbone} ({weights_backbone}): {exc}. "
            "Put the file in torch's hub cache (TORCH_HOME) on a machine with a network, or train from scratch "
            "(pretrained=None)"
        ) from exc
