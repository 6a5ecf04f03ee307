"""Binarized GoogLeNet appearance codes of a garment's region.

The code of a region is torchvision's GoogLeNet activations of ``inception4e`` (832 channels)
and ``inception5b`` (1024 channels), each global-average-pooled, concatenated (1856 values),
centred by a per-dimension median estimated on the catalogue, and thresholded at zero: one bit
per dimension, packed into 232 bytes. The activations come after a ReLU, so thresholding them
at zero without centring would set almost every bit; the median makes each bit split the
catalogue in two halves (high entropy).

The network is ImageNet's when the user has those weights (``weights="imagenet"``), otherwise
``fashion-search train appearance`` trains it here on the dump's product regions: category
classification on two augmented views of each region plus a term pulling the two views'
centred features together (augmentation invariance).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from foundation import modelfiles
from foundation.devices import parse_device
from foundation.modelfiles import Preprocess
from foundation.schema import Schema

logger = logging.getLogger(__name__)

NAME = "appearance"
LAYERS = ("inception4e", "inception5b")
FEATURE_DIMS = (832, 1024)  # their channels
DIMS = sum(FEATURE_DIMS)
CODE_BYTES = (DIMS + 7) // 8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GoogLeNetFeatures(nn.Module):
    """GoogLeNet up to ``inception5b``; returns the pooled 4e and 5b activations, concatenated.

    The two taps come from torchvision's ``create_feature_extractor``; ``net`` keeps GoogLeNet's
    submodule names, so the state_dict keys (``net.conv1...``) are those of the GoogLeNet it wraps.

    Args:
        num_classes: categories of the training head (0: no head, for ImageNet features).
        weights: ``None`` (from scratch) or a torchvision ``GoogLeNet_Weights`` value.
    """

    def __init__(self, *, num_classes: int = 0, weights=None, transform_input: bool = False):
        super().__init__()
        if weights is None:
            googlenet = torchvision.models.googlenet(
                weights=None, aux_logits=False, init_weights=True, transform_input=transform_input
            )
        else:
            googlenet = torchvision.models.googlenet(weights=weights, aux_logits=False)
        self.net = create_feature_extractor(googlenet, return_nodes={layer: layer for layer in LAYERS})
        self.net.transform_input = googlenet.transform_input  # traced into the graph; saved with the preprocessing
        self.head = nn.Linear(DIMS, num_classes) if num_classes else None

    def __deepcopy__(self, memo):
        # torchvision's DualGraphModule comes out of a deepcopy in training mode and without the
        # attributes set on it: give every module back its mode, and the flag its value
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        for ours, theirs in zip(self.modules(), clone.modules()):
            theirs.training = ours.training
        clone.net.transform_input = self.net.transform_input
        return clone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, 3, H, W) normalised images -> (N, 1856) pooled activations (>= 0)."""
        taps = self.net(x)
        return torch.cat([F.adaptive_avg_pool2d(taps[layer], 1).flatten(1) for layer in LAYERS], 1)


def imagenet_weights():
    """torchvision's ImageNet GoogLeNet weights, or a clear error when they cannot be had here."""
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    try:
        weights.get_state_dict(progress=False, check_hash=True)  # from torch's cache, or downloaded once
    except Exception as exc:  # no network, no cache: urllib raises several types
        raise modelfiles.ModelError(
            f"ImageNet GoogLeNet weights are not available ({exc.__class__.__name__}: {exc}); put "
            f"{weights.url.rsplit('/', 1)[-1]} in {torch.hub.get_dir()}/checkpoints or train the network "
            "here with `fashion-search train appearance`"
        ) from None
    return weights


class AppearanceCoder:
    """A GoogLeNet feature extractor with its preprocessing and centring median: images -> codes."""

    def __init__(
        self,
        net: GoogLeNetFeatures,
        *,
        image_size: int,
        median: np.ndarray | None = None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        device: str = "cpu",
    ):
        self.device = parse_device(device)
        self.net = net.to(self.device).eval()
        self.image_size = int(image_size)
        self.median = None if median is None else np.asarray(median, np.float32).reshape(DIMS)
        self.preprocess = Preprocess(self.image_size, tuple(map(float, mean)), tuple(map(float, std)))

    code_bytes = CODE_BYTES

    @classmethod
    def load(cls, models_dir: str | Path, *, device: str = "cpu", schema: Schema | None = None) -> AppearanceCoder:
        return load(models_dir, device=device, schema=schema)[0]

    @classmethod
    def imagenet(cls, *, image_size: int = 224, device: str = "cpu") -> AppearanceCoder:
        """ImageNet features; set ``median`` with :meth:`fit_median` on the catalogue before coding."""
        return cls(GoogLeNetFeatures(weights=imagenet_weights()), image_size=image_size, device=device)

    def save(
        self,
        models_dir: str | Path,
        *,
        schema: Schema | None = None,
        metrics: dict | None = None,
        config: dict | None = None,
        data_hash: str | None = None,
    ) -> Path:
        if self.median is None:
            raise ValueError("fit the median on the catalogue before saving the appearance coder")
        state = {k: v for k, v in self.net.state_dict().items() if not k.startswith("head.")}
        return modelfiles.save_model(
            models_dir,
            NAME,
            state_dicts={"features": state, "median": {"median": torch.from_numpy(self.median.copy())}},
            config=config or {},
            schema=schema,
            metrics=metrics,
            data_hash=data_hash,
            preprocessing={**self.preprocess.to_dict(), "transform_input": bool(self.net.net.transform_input)},
            extra={"dims": DIMS, "code_bytes": CODE_BYTES, "layers": list(LAYERS)},
        )

    def tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, S, S) network input of RGB images: squashed to S x S, ImageNet-normalised."""
        return self.preprocess.batch(images)

    @torch.inference_mode()
    def features(self, images: Sequence[Image.Image], *, batch_size: int = 64) -> np.ndarray:
        """(N, 1856) float32 pooled activations of RGB region images."""
        if not len(images):
            return np.zeros((0, DIMS), np.float32)
        out = []
        for i in range(0, len(images), batch_size):
            x = self.tensor(images[i : i + batch_size]).to(self.device)
            out.append(self.net(x).float().cpu().numpy())
        return np.concatenate(out)

    def binarize(self, features: np.ndarray) -> np.ndarray:
        """(N, 1856) features -> (N, 232) uint8 packed bits of ``feature > median``."""
        if self.median is None:
            raise ValueError("the appearance coder has no median: fit it on the catalogue first (fit_median)")
        return np.packbits(np.asarray(features) > self.median, axis=1)

    def encode(self, images: Sequence[Image.Image], *, batch_size: int = 64) -> np.ndarray:
        return self.binarize(self.features(images, batch_size=batch_size))

    def fit_median(self, images: Sequence[Image.Image]) -> np.ndarray:
        feats = self.features(images)
        self.median = np.median(feats, axis=0).astype(np.float32)
        return feats


def load(
    models_dir: str | Path, *, device: str = "cpu", schema: Schema | None = None
) -> tuple[AppearanceCoder, Preprocess]:
    """(the saved coder on ``device``, its preprocessing: PIL image -> (3, S, S) tensor).

    ``coder.net(torch.stack([preprocess(im) for im in images]))`` gives the (N, 1856) features and
    ``coder.binarize`` their codes against the saved median; ``coder.encode(images)`` does both.
    A model trained on another schema is refused.
    """
    ckpt = modelfiles.load_model(models_dir, NAME, schema=schema)
    pre = ckpt["preprocessing"]
    net = GoogLeNetFeatures(num_classes=0, weights=None, transform_input=bool(pre.get("transform_input", False)))
    state = {k: v for k, v in ckpt["state_dicts"]["features"].items() if not k.startswith("head.")}
    net.load_state_dict(state, strict=True)
    median = ckpt["state_dicts"]["median"]["median"].numpy()
    preprocess = Preprocess.from_saved(pre)
    coder = AppearanceCoder(
        net, image_size=preprocess.image_size, median=median, mean=preprocess.mean, std=preprocess.std, device=device
    )
    return coder, coder.preprocess


def untrained_coder(*, image_size: int = 64, seed: int = 0, calibration: Sequence[Image.Image] = ()) -> AppearanceCoder:
    """A randomly initialised coder (for tests and smoke runs), its median fitted on ``calibration``."""
    torch.manual_seed(seed)
    coder = AppearanceCoder(GoogLeNetFeatures(), image_size=image_size)
    if calibration:
        coder.fit_median(list(calibration))
    else:
        coder.median = np.zeros(DIMS, np.float32)
    return coder
