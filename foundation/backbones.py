"""Backbones as a typed choice: a two-tap trunk and a detector FPN backbone.

``build_trunk`` gives a module mapping ImageNet-normalised images (N, 3, H, W) to a dict of two
feature maps, ``"mid"`` (stride 16) and ``"final"`` (stride 32): torchvision's models through
``create_feature_extractor``, and EfficientNet-Lite2 from the optional ``efficientnet`` extra
(``foundation.efficientnet_lite``; it converts the input to the normalisation its weights expect).
``detector_backbone`` gives the FPN backbone of a Faster R-CNN (torchvision's backbones only).
``pretrained="imagenet"`` loads installed ImageNet weights and never downloads (see
``foundation.weights``); ``"none"`` trains from scratch.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torchvision.models as tvm
from torch import fx, nn
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import misc as misc_nn_ops

from foundation import efficientnet_lite
from foundation.weights import efficientnet_architecture_installed, imagenet_weights, is_available

Backbone = Literal["mobilenet_v2", "resnet18", "resnet50", "googlenet", "efficientnet_lite2"]
Pretrained = Literal["imagenet", "none"]
BACKBONES: tuple[str, ...] = ("mobilenet_v2", "resnet18", "resnet50", "googlenet", "efficientnet_lite2")
TORCHVISION_BACKBONES = BACKBONES[:4]
PRETRAINED: tuple[str, ...] = ("imagenet", "none")
TAPS = ("mid", "final")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224  # the crop torchvision's ImageNet weights were trained and evaluated at
# each backbone's natural square input: the size its ImageNet weights were trained at
INPUT_SIZES = {**dict.fromkeys(TORCHVISION_BACKBONES, INPUT_SIZE), "efficientnet_lite2": efficientnet_lite.INPUT_SIZE}


@dataclass(frozen=True)
class _Spec:
    nodes: tuple[str, str]  # module names (in the trunk's body) of the mid and final taps
    channels: tuple[int, int]


# The mid tap is the last block at stride 16 in every backbone, the final one the last at stride 32:
# mobilenet_v2 features.13 (last 96-channel block; features.14 already strides to 32) and
# features.18 (the 1280-channel 1x1 conv); resnet layer3 and layer4; googlenet inception4e and
# inception5b, the taps of the paper's code; efficientnet_lite2 _blocks.14 (last 120-channel block)
# and _conv_head (the 1280-channel 1x1 conv, with its batch norm and ReLU6), as mobilenet_v2's.
_SPECS: dict[str, _Spec] = {
    "mobilenet_v2": _Spec(("features.13", "features.18"), (96, 1280)),
    "resnet18": _Spec(("layer3", "layer4"), (256, 512)),
    "resnet50": _Spec(("layer3", "layer4"), (1024, 2048)),
    "googlenet": _Spec(("inception4e", "inception5b"), (832, 1024)),
    "efficientnet_lite2": _Spec((f"_blocks.{efficientnet_lite.MID_BLOCK}", "_conv_head"), efficientnet_lite.CHANNELS),
}
if tuple(_SPECS) != BACKBONES:
    raise RuntimeError("every backbone needs its taps")


# The trunk's stages, the modules (names in torchvision's model) working at strides 2, 4, 8, 16 and
# 32; a model's ``frozen_stages=k`` freezes the first k. mobilenet_v2's features.18 (the 1280-channel 1x1 conv,
# the final tap) belongs to the last stage.
STAGES: dict[str, tuple[tuple[str, ...], ...]] = {
    "mobilenet_v2": (
        ("features.0", "features.1"),
        ("features.2", "features.3"),
        ("features.4", "features.5", "features.6"),
        tuple(f"features.{i}" for i in range(7, 14)),
        tuple(f"features.{i}" for i in range(14, 19)),
    ),
    "resnet18": (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
    "resnet50": (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
    "googlenet": (
        ("conv1",),
        ("conv2", "conv3"),
        ("inception3a", "inception3b"),
        ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"),
        ("inception5a", "inception5b"),
    ),
    "efficientnet_lite2": (
        ("_conv_stem", "_bn0", "_blocks.0"),
        tuple(f"_blocks.{i}" for i in range(1, 4)),
        tuple(f"_blocks.{i}" for i in range(4, 7)),
        tuple(f"_blocks.{i}" for i in range(7, 15)),
        (*(f"_blocks.{i}" for i in range(15, 21)), "_conv_head", "_bn1"),
    ),
}
N_STAGES = 5
if set(STAGES) != set(BACKBONES) or any(len(s) != N_STAGES for s in STAGES.values()):
    raise RuntimeError("every backbone needs its five stages")


def frozen_modules(name: str, stages: int) -> list[str]:
    """The module names of backbone ``name``'s first ``stages`` stages (those a fine-tuning keeps frozen)."""
    if not 0 <= stages <= N_STAGES:
        raise ValueError(f"frozen stages must be between 0 and {N_STAGES}, got {stages}")
    return [module for stage in STAGES[check_backbone(name)][:stages] for module in stage]


def split_body(body: nn.Module, name: str, stages: int) -> tuple[fx.GraphModule, fx.GraphModule]:
    """A trunk's body (``build_trunk(name).body``, a torchvision feature-extraction graph) cut after
    its first ``stages`` stages: ``(prefix, suffix)``, ``suffix(prefix(x)) == body(x)``. Both share
    the body's modules (no weights are copied). A body whose later layers read an activation from
    before the cut other than the cut's own is refused (``ValueError``)."""
    if not isinstance(body, fx.GraphModule):
        raise ValueError(f"a {name} trunk that is not a traced graph cannot be cut")
    if not 1 <= stages < N_STAGES:
        raise ValueError(f"a trunk is cut after 1 to {N_STAGES - 1} stages, got {stages}")
    first = STAGES[check_backbone(name)][stages][0]  # the first module after the cut
    starts = [
        n for n in body.graph.nodes if n.op == "call_module" and (n.target == first or n.target.startswith(first + "."))
    ]
    if not starts:
        raise ValueError(f"the {name} trunk has no {first}")
    cut = starts[0].args[0].name

    prefix = fx.GraphModule(body, copy.deepcopy(body.graph))
    nodes = {n.name: n for n in prefix.graph.nodes}
    prefix.graph.erase_node(next(n for n in prefix.graph.nodes if n.op == "output"))
    prefix.graph.output(nodes[cut])

    suffix = fx.GraphModule(body, copy.deepcopy(body.graph))
    nodes = {n.name: n for n in suffix.graph.nodes}
    (images,) = [n for n in suffix.graph.nodes if n.op == "placeholder"]
    with suffix.graph.inserting_before(images):
        stem = suffix.graph.placeholder("stem")
    nodes[cut].replace_all_uses_with(stem)
    for part in (prefix, suffix):
        part.graph.eliminate_dead_code()
    if images.users:
        raise ValueError(f"the {name} trunk reads its input again after {first}: it cannot be cut there")
    suffix.graph.erase_node(images)
    for part in (prefix, suffix):
        part.delete_all_unused_submodules()
        part.recompile()
    return prefix, suffix


def check_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    return name


def input_size(name: str) -> int:
    """The square input size backbone ``name``'s ImageNet weights were trained at (224; 260 for efficientnet_lite2)."""
    return INPUT_SIZES[check_backbone(name)]


def installed(name: str) -> bool:
    """Whether backbone ``name`` can be built here: torchvision's always, efficientnet_lite2 with its extra."""
    return check_backbone(name) in TORCHVISION_BACKBONES or efficientnet_architecture_installed()


def check_pretrained(pretrained: str) -> str:
    if pretrained not in PRETRAINED:
        raise ValueError(f"unknown pretrained value {pretrained!r}: choose one of {', '.join(PRETRAINED)}")
    return pretrained


def default_backbone() -> str:
    """The first torchvision backbone whose ImageNet weights are installed (mobilenet_v2 first), else mobilenet_v2.

    mobilenet_v2 is also the fallback because it is the cheapest to train from scratch.
    efficientnet_lite2 is only ever chosen by name: the presets' schedules and budgets were measured
    on torchvision's backbones.
    """
    for name in TORCHVISION_BACKBONES:
        if is_available(name):
            return name
    return "mobilenet_v2"


def default_pretrained(name: str | None = None) -> str:
    """``"imagenet"`` when the weights of ``name`` (default: ``default_backbone()``) are installed, else ``"none"``."""
    return "imagenet" if is_available(check_backbone(name or default_backbone())) else "none"


def _classifier(name: str, pretrained: str) -> nn.Module:
    weights = imagenet_weights(name) if pretrained == "imagenet" else None
    if name == "googlenet":
        if weights is None:
            # transform_input stays False: inputs are ImageNet-normalised. With the ImageNet weights
            # torchvision sets it True, since those (ported) weights expect inputs in [-1, 1].
            return tvm.googlenet(weights=None, aux_logits=False, init_weights=True)
        return tvm.googlenet(weights=weights, progress=False)
    return getattr(tvm, name)(weights=weights, progress=False)


class Trunk(nn.Module):
    """Images (N, 3, H, W), ImageNet-normalised, to ``{"mid": (N, C_mid, H/16, W/16), "final": (N, C_final, H/32, W/32)}``.

    Attributes: ``name``, ``pretrained``, ``nodes`` and ``channels`` (per tap), ``mid_channels``,
    ``final_channels``, ``strides``, ``mean``, ``std`` and the recommended square ``input_size``.
    """

    def __init__(self, name: str, pretrained: str, body: nn.Module, spec: _Spec):
        super().__init__()
        self.name = name
        self.pretrained = pretrained
        self.body = body
        self.nodes = dict(zip(TAPS, spec.nodes, strict=True))
        self.channels = dict(zip(TAPS, spec.channels, strict=True))
        self.mid_channels, self.final_channels = spec.channels
        self.strides = {"mid": 16, "final": 32}
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.input_size = INPUT_SIZES[name]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body(images)

    def extra_repr(self) -> str:
        return f"name={self.name}, pretrained={self.pretrained}, nodes={self.nodes}, channels={self.channels}"


def build_trunk(name: str, *, pretrained: str) -> Trunk:
    """The two-tap feature trunk of backbone ``name``; ``pretrained="imagenet"`` needs its weights installed."""
    check_backbone(name)
    check_pretrained(pretrained)
    spec = _SPECS[name]
    if name == "efficientnet_lite2":
        body = efficientnet_lite.build_lite2_body(pretrained=pretrained, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return Trunk(name, pretrained, body, spec)
    model = _classifier(name, pretrained)
    body = create_feature_extractor(model, return_nodes=dict(zip(spec.nodes, TAPS, strict=True)))
    return Trunk(name, pretrained, body, spec)


# (most trainable stages, default when pretrained) per detector backbone family
_DETECTOR_STAGES = {"mobilenet_v2": (6, 3), "resnet18": (5, 3), "resnet50": (5, 3)}


def detector_backbone(name: str, *, pretrained: str, trainable_layers: int | None = None) -> nn.Module:
    """The FPN backbone (with ``out_channels``) of a Faster R-CNN on backbone ``name``.

    Pretrained: frozen batch norm and ``trainable_layers`` trainable stages (default 3), as
    torchvision's detection models do. From scratch: ordinary batch norm and every stage
    trainable (a frozen random layer would never learn), so ``trainable_layers`` is ignored.
    """
    check_backbone(name)
    check_pretrained(pretrained)
    if name not in _DETECTOR_STAGES:
        raise ValueError(
            f"backbone {name!r} has no detector backbone (it serves the attribute and appearance trunks only): "
            f"choose one of {', '.join(_DETECTOR_STAGES)}"
        )
    most, default = _DETECTOR_STAGES[name]
    if pretrained == "imagenet":
        weights = imagenet_weights(name)
        norm_layer = misc_nn_ops.FrozenBatchNorm2d
        layers = default if trainable_layers is None else trainable_layers
    else:
        weights = None
        norm_layer = nn.BatchNorm2d
        if trainable_layers not in (None, most):
            warnings.warn(
                f"{name} from scratch trains all {most} stages; trainable_layers={trainable_layers} is ignored",
                stacklevel=2,
            )
        layers = most
    if not 0 <= layers <= most:
        raise ValueError(f"trainable_layers of {name} must be between 0 and {most}, got {layers}")
    if name == "mobilenet_v2":
        return mobilenet_backbone(
            backbone_name=name, weights=weights, fpn=True, norm_layer=norm_layer, trainable_layers=layers
        )
    return resnet_fpn_backbone(backbone_name=name, weights=weights, norm_layer=norm_layer, trainable_layers=layers)
