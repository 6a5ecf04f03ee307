"""The detector model: torchvision's Faster R-CNN over all schema categories jointly.

Class 0 is torchvision's background; class ``i + 1`` is the schema's ``category_names[i]``.
Anchors, RoI pooling and NMS are torchvision's own. The backbone is a typed choice: the FPN
backbones of ``foundation.backbones.detector_backbone`` (``mobilenet_v2``, the default, and
``resnet18``/``resnet50``), or torchvision's own ``mobilenet_v3_large_fpn``/``resnet50_fpn``
detectors (kept so that checkpoints trained on them still load).

At inference the box head gives three sets of detections from the same proposals (see
``GroupedRoIHeads``): per category (torchvision's), per great-category (scored with the sum of
its categories' softmax probabilities) and per category ranked among its great-category's boxes.
Guided detection uses the last two (see ``detector.predict``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.schema import Schema, default_schema

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

FPN_BACKBONES = ("mobilenet_v2", "resnet18", "resnet50")  # foundation.backbones.detector_backbone
LEGACY_BACKBONES = ("mobilenet_v3_large_fpn", "resnet50_fpn")  # torchvision's own Faster R-CNN builders
BACKBONES = (*FPN_BACKBONES, *LEGACY_BACKBONES)
PRETRAINED = ("auto", "imagenet", "none")
GUIDANCE = ("ranked", "great_category", "category")  # how a guide category selects ROIs (detector.predict)


@dataclass(frozen=True)
class DetectorConfig:
    """How the detector is built; stored in its checkpoint.

    Attributes:
        backbone: one of ``BACKBONES``; ``mobilenet_v2`` (the default) and the ResNets come from
            ``foundation.backbones.detector_backbone``.
        pretrained: ``"imagenet"`` (torchvision's ImageNet backbone weights, from the hub cache:
            a missing file is an error), ``"none"`` (from scratch) or ``"auto"`` (ImageNet where
            the backbone's weights are installed, else from scratch with a warning; resolved
            before training, so a checkpoint records which).
        trainable_layers: backbone stages trained when pretrained (None: the backbone's default,
            3); every stage trains from scratch.
        min_size / max_size: torchvision's resize of the input (shorter / longer side, pixels).
        anchor_sizes: RPN anchor sides in pixels of the resized input (FPN backbones; every
            size on every level for ``mobilenet_v2``, whose levels all have stride 32 or more;
            one a level for the ResNets); the legacy backbones keep torchvision's.
        representation_size: width of the box head's two fully connected layers.
        rpn_pre_nms_top_n_test / rpn_post_nms_top_n_test: proposals kept at inference before and
            after the RPN's NMS (torchvision: 1000 each; the box head's cost grows with them).
        detections_per_image: most boxes kept per image after NMS (each of the two sets).
        box_score_thresh: lowest score torchvision returns (callers apply their own threshold on top).
        stride16: ``mobilenet_v2`` only (and its default): its FPN's finer level at stride 16
            (features.13) rather than 32 (features.14, ``detector_backbone``'s tap). Measured on
            the demo's synthetic scenes at 128 px: guided recall@0.5 0.70 -> 0.97, non-guided
            mAP@0.7 0.37 -> 0.81; at 256 px it costs ~2 ms an image.
    """

    backbone: str = "mobilenet_v2"
    pretrained: str = "auto"
    trainable_layers: int | None = None
    # 256 px: ~55 ms an image at batch 1 on 2 CPU cores (320 px: ~100 ms; 224: ~48; measured with
    # 100 proposals and batch norm folded), garments down to ~20 px (ccp's small shoes) still seen
    min_size: int = 256
    max_size: int = 384
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)  # sides of garments in a 256-384 px image
    representation_size: int = 512  # torchvision: 1024; 512 halves the box head's cost (~10 ms an image)
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 100  # torchvision: 1000 (480 ms an image at 320 px against 100 ms)
    stride16: bool | None = None  # None: True for mobilenet_v2 (the only backbone it applies to)
    detections_per_image: int = 50
    box_score_thresh: float = 0.01
    box_batch_size_per_image: int = (
        64  # RoIs sampled per training image (torchvision: 512; the box head dominates CPU time)
    )
    rpn_post_nms_top_n_train: int = 300  # proposals kept per training image (torchvision: 2000)
    # RoI pooling's samples per bin side in training (torchvision: 2); inference takes
    # detector.predict.ROI_SAMPLING_RATIO. On the CPU RoI pooling's backward dominates a step: the
    # demo's went from 0.85 to 0.42 s (batch 8 at 128 px) with 1.
    roi_sampling_ratio: int = 2

    def __post_init__(self) -> None:
        if self.pretrained is None:  # checkpoints saved before pretrained was a choice of three
            object.__setattr__(self, "pretrained", "none")
        object.__setattr__(self, "anchor_sizes", tuple(int(s) for s in self.anchor_sizes))
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown detector backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.pretrained not in PRETRAINED:
            raise ValueError(f"unknown pretrained value {self.pretrained!r}; choose one of {', '.join(PRETRAINED)}")
        if not (32 <= self.min_size <= self.max_size):
            raise ValueError(f"need 32 <= min_size <= max_size, got min_size={self.min_size} max_size={self.max_size}")
        if not self.anchor_sizes or min(self.anchor_sizes) < 4:
            raise ValueError(f"anchor_sizes must be sides of at least 4 pixels, got {self.anchor_sizes}")
        if self.backbone in ("resnet18", "resnet50") and len(self.anchor_sizes) != 5:
            raise ValueError(f"{self.backbone}'s FPN has 5 levels: give 5 anchor_sizes, got {self.anchor_sizes}")
        if self.roi_sampling_ratio < 1:
            raise ValueError(f"roi_sampling_ratio must be at least 1, got {self.roi_sampling_ratio!r}")
        if self.stride16 is None:
            object.__setattr__(self, "stride16", self.backbone == "mobilenet_v2")
        if self.stride16 and self.backbone != "mobilenet_v2":
            raise ValueError(f"stride16 is a choice of the mobilenet_v2 backbone, not of {self.backbone}")
        for name in ("representation_size", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self) -> DetectorConfig:
        """``pretrained="auto"`` made concrete: ImageNet where the backbone's weights are installed, else none."""
        if self.pretrained != "auto":
            return self
        if _weights_installed(self.backbone):
            return replace(self, pretrained="imagenet")
        logger.warning(
            "ImageNet weights for the detector's %s backbone are not installed: it trains from scratch, which "
            "needs far longer to find garments (%s; or pass --pretrained none to say so)",
            self.backbone,
            _install_hint(self.backbone),
        )
        return replace(self, pretrained="none")


def class_names(schema: Schema | None = None) -> tuple[str, ...]:
    """Category of each model class index; index 0 is the background."""
    schema = schema or default_schema()
    return ("__background__", *schema.category_names)


def great_categories(schema: Schema | None = None) -> tuple[str, ...]:
    """The great-categories of the schema's categories, in order of first appearance."""
    schema = schema or default_schema()
    return tuple(dict.fromkeys(schema.great_category(c) for c in schema.category_names))


def class_groups(schema: Schema | None = None) -> list[int]:
    """Per model class (background first, -1), the index of its great-category in ``great_categories``."""
    schema = schema or default_schema()
    greats = great_categories(schema)
    return [-1, *(greats.index(schema.great_category(c)) for c in schema.category_names)]


# -- ImageNet weights -----------------------------------------------------------------------------
def _legacy_weights(backbone: str):
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    return (
        MobileNet_V3_Large_Weights.IMAGENET1K_V1
        if backbone == "mobilenet_v3_large_fpn"
        else ResNet50_Weights.IMAGENET1K_V1
    )


def _weights_installed(backbone: str) -> bool:
    from foundation.weights import checkpoints_dir, is_available

    if backbone in FPN_BACKBONES:
        return is_available(backbone)
    return (checkpoints_dir() / Path(_legacy_weights(backbone).url).name).is_file()


def _install_hint(backbone: str) -> str:
    from foundation.weights import INSTALL_HINT

    if backbone == "mobilenet_v2":
        return f"install them with `{INSTALL_HINT}`"
    return "copy torchvision's file into torch's hub cache (this machine cannot download it)"


def _legacy_imagenet(backbone: str):
    """torchvision's weights enum for a legacy backbone, once its file is in the hub cache (never downloads)."""
    from foundation.weights import SCRATCH_HINT, WeightsMissing, checkpoints_dir, verify_cached

    weights = _legacy_weights(backbone)
    path = checkpoints_dir() / Path(weights.url).name
    if not path.is_file():
        raise WeightsMissing(
            f"ImageNet weights for the {backbone} detector are not installed: {path.name} is missing from "
            f"{path.parent}; copy torchvision's {weights.url} there (this machine cannot download it), "
            f"or {SCRATCH_HINT}"
        )
    verify_cached(path)
    return weights


# -- the model ------------------------------------------------------------------------------------
def _keep(heads, boxes, scores, labels):
    """torchvision's filtering of detections (score floor, empty boxes, NMS per label), at most
    ``detections_per_img`` per label, best first."""
    import torch
    from torchvision.ops import boxes as box_ops

    keep = torch.where(scores > heads.score_thresh)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = box_ops.batched_nms(boxes, scores, labels, heads.nms_thresh)  # best first
    by_label = keep[torch.argsort(labels[keep], stable=True)]  # grouped by label, best first within each
    sorted_labels = labels[by_label]
    rank = torch.arange(len(by_label), device=labels.device) - torch.searchsorted(sorted_labels, sorted_labels)
    keep = by_label[rank < heads.detections_per_img]
    keep = keep[torch.argsort(scores[keep], descending=True)]
    return boxes[keep], scores[keep], labels[keep]


class GroupedRoIHeads:
    """Mixed into torchvision's ``RoIHeads``: inference also returns the detections guidance uses.

    For ``C`` classes (background included) and ``G`` great-categories, each image's labels are:
    ``1 .. C-1`` per category (torchvision's own detections); ``C + g``: great-category ``g``,
    scored with its probability (the sum of its categories'); ``C + G + c - 1``: category ``c``
    ranked among its great-category's boxes, scored ``P(great | box) * P(c | box) / max P(c | box')``
    over the image's proposals ``box'``: the box the detector finds likeliest to be ``c`` keeps its
    great-category's probability, other boxes of that great-category are discounted by how much
    less likely they are to be ``c``. Great-category boxes are placed with the regression of their
    likeliest category.
    """

    groups: torch.Tensor  # [num_classes] great-category index per class, -1 for the background

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        import torch
        from torchvision.ops import boxes as box_ops

        boxes, scores, labels = super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        num_classes = class_logits.shape[-1]
        groups = self.groups.to(class_logits.device)
        n_groups = int(groups.max()) + 1
        member = torch.nn.functional.one_hot(groups.clamp(min=0), n_groups).to(class_logits.dtype)
        member[0] = 0  # the background belongs to no group
        per_image = [p.shape[0] for p in proposals]
        probs = torch.softmax(class_logits, -1)
        decoded = self.box_coder.decode(box_regression, proposals)  # [N, num_classes, 4]
        for i, (p, b, shape) in enumerate(zip(probs.split(per_image), decoded.split(per_image), image_shapes)):
            n = p.shape[0]
            b = box_ops.clip_boxes_to_image(b, shape)
            group_scores = p @ member  # [N, G]: each great-category's probability
            # the box of the most likely category of each group: other groups' categories masked out
            in_group = member.T[:, None, :].bool()  # [G, 1, C]
            best = torch.where(in_group, p[None], torch.full_like(p[None], -1.0)).argmax(-1)  # [G, N]
            g_boxes = b[torch.arange(n, device=b.device)[None], best].transpose(0, 1)  # [N, G, 4]
            g_labels = (num_classes + torch.arange(n_groups, device=p.device)).expand(n, -1)
            great = _keep(self, g_boxes.reshape(-1, 4), group_scores.reshape(-1), g_labels.reshape(-1))
            cats = groups[1:]  # great-category of each category
            relative = p[:, 1:] / p[:, 1:].amax(0).clamp_min(1e-12)  # [N, C-1]
            r_labels = (num_classes + n_groups + torch.arange(num_classes - 1, device=p.device)).expand(n, -1)
            ranked = _keep(
                self,
                g_boxes[:, cats].reshape(-1, 4),
                (group_scores[:, cats] * relative).reshape(-1),
                r_labels.reshape(-1),
            )
            boxes[i] = torch.cat([boxes[i], great[0], ranked[0]])
            scores[i] = torch.cat([scores[i], great[1], ranked[1]])
            labels[i] = torch.cat([labels[i], great[2], ranked[2]])
        return boxes, scores, labels


@functools.cache
def _grouped_heads_class() -> type:
    from torchvision.models.detection.roi_heads import RoIHeads

    return type("GroupedTorchvisionRoIHeads", (GroupedRoIHeads, RoIHeads), {})


def _with_groups(model, groups: list[int]):
    import torch
    from torchvision.models.detection.roi_heads import RoIHeads

    heads = model.roi_heads
    if type(heads) is not RoIHeads:
        raise TypeError(f"expected torchvision's RoIHeads, got {type(heads).__name__}")
    heads.__class__ = _grouped_heads_class()  # the same module, one method more
    heads.groups = torch.tensor(groups, dtype=torch.int64)  # not a buffer: state dicts stay torchvision's
    return model


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Every ``BatchNorm2d`` under ``module`` replaced by torchvision's ``FrozenBatchNorm2d`` (same statistics)."""
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def _fold(conv, norm) -> None:
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
    )
    conv.weight, conv.bias = weight, torch.nn.Parameter(bias.detach())


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Inference only: each batch norm that follows a convolution folded into it (the same function, less work).

    Covers the conv-then-norm pairs of ``nn.Sequential`` blocks (MobileNetV2's) and the
    ``convN``/``bnN`` attributes of ResNet blocks; the model's state dict changes shape, so fold
    after loading weights, never before training or saving.
    """
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    norms = (nn.BatchNorm2d, FrozenBatchNorm2d)
    if model.training:
        raise ValueError("fold batch norm into a model in eval mode only")
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], norms):
                    _fold(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
        for name, child in list(module.named_children()):
            if name.startswith("bn") and isinstance(child, norms):
                conv = getattr(module, "conv" + name[2:], None)
                if isinstance(conv, nn.Conv2d):
                    _fold(conv, child)
                    setattr(module, name, nn.Identity())
    return model


def _tap_stride16(backbone) -> None:
    """MobileNetV2's FPN fed from features.13 (stride 16, its last 96-channel block) instead of features.14.

    ``detector_backbone`` taps features.14 and features.18, the outputs of its last two stages,
    which are both at stride 32 (features.14 is the block that strides). Tapping features.13
    instead gives the FPN a stride-16 level, where RoI pooling then takes most boxes from: a
    20-pixel shoe spans more than one cell. The FPN is new (it is never pretrained).
    """
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    body = backbone.body
    if dict(body.return_layers) != {"14": "0", "18": "1"}:
        raise ValueError(f"unexpected MobileNetV2 FPN taps {dict(body.return_layers)}")
    body.return_layers = {"13": "0", "18": "1"}
    channels = [body["13"].out_channels, body["18"].out_channels]
    backbone.fpn = FeaturePyramidNetwork(channels, backbone.out_channels, extra_blocks=LastLevelMaxPool())


def _fpn_detector(cfg: DetectorConfig, num_classes: int, pretrained: str, common: dict):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    from foundation.backbones import detector_backbone

    backbone = detector_backbone(cfg.backbone, pretrained=pretrained, trainable_layers=cfg.trainable_layers)
    if cfg.stride16:
        _tap_stride16(backbone)
    ratios = (0.5, 1.0, 2.0)
    if cfg.backbone == "mobilenet_v2":  # levels "0", "1" (stride 32) and "pool" (64)
        anchors = AnchorGenerator((cfg.anchor_sizes,) * 3, (ratios,) * 3)
    else:  # levels "0".."3" (strides 4..32) and "pool"
        anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), (ratios,) * 5)
    resolution = 7  # torchvision's MultiScaleRoIAlign output
    box_head = TwoMLPHead(backbone.out_channels * resolution**2, cfg.representation_size)
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], resolution, sampling_ratio=cfg.roi_sampling_ratio)
    return FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_roi_pool=pooler,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(cfg.representation_size, num_classes),
        rpn_score_thresh=0.0,
        **common,
    )


def _legacy_detector(cfg: DetectorConfig, num_classes: int, pretrained: str, common: dict):
    from torchvision.models import detection

    builder = {
        "mobilenet_v3_large_fpn": detection.fasterrcnn_mobilenet_v3_large_fpn,
        "resnet50_fpn": detection.fasterrcnn_resnet50_fpn,
    }[cfg.backbone]
    weights_backbone = _legacy_imagenet(cfg.backbone) if pretrained == "imagenet" else None
    kwargs = dict(weights=None, weights_backbone=weights_backbone, num_classes=num_classes, **common)
    if cfg.backbone == "mobilenet_v3_large_fpn":
        kwargs["rpn_score_thresh"] = 0.0  # torchvision's 0.05 starves an untrained RPN of proposals
    if weights_backbone is not None and cfg.trainable_layers is not None:
        kwargs["trainable_backbone_layers"] = cfg.trainable_layers
    return builder(**kwargs)


def build_detector(
    cfg: DetectorConfig, *, num_classes: int, groups: list[int] | None = None, imagenet_file: bool = True
):
    """A torchvision Faster R-CNN for ``num_classes`` classes (background included).

    Input: a list of float images ``[3, H, W]`` in ``[0, 1]``; targets (training) hold ``boxes``
    ``[N, 4]`` as ``[x0, y0, x1, y1]`` pixels and ``labels`` ``[N]`` int64 in ``1..num_classes-1``.
    ``groups`` (``class_groups(schema)`` by default when ``num_classes`` matches the schema's)
    adds the great-category detections at inference. ImageNet weights come from torch's hub cache
    and are never downloaded: a missing file raises ``foundation.weights.WeightsMissing``.
    ``imagenet_file=False`` builds a pretrained config's architecture (frozen batch norm) without
    reading the file, for loading saved weights over it.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must count the background and at least one category, got {num_classes}")
    cfg = cfg.resolved() if imagenet_file else cfg
    pretrained = cfg.pretrained if imagenet_file else "none"
    common = dict(
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        box_detections_per_img=cfg.detections_per_image,
        box_score_thresh=cfg.box_score_thresh,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
    )
    build = _fpn_detector if cfg.backbone in FPN_BACKBONES else _legacy_detector
    model = build(cfg, num_classes, pretrained, common)
    if not imagenet_file and cfg.pretrained == "imagenet":
        freeze_batch_norm(model.backbone.body)  # as the pretrained build has it
    if groups is None and num_classes == len(class_names()):
        groups = class_groups()
    if groups is not None:
        if len(groups) != num_classes:
            raise ValueError(f"groups must give one great-category per class ({num_classes}), got {len(groups)}")
        _with_groups(model, groups)
    return model
