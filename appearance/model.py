"""Binarized appearance codes of a garment's region, from a mid-level and a final backbone tap.

The code of a region is a backbone's activations at two taps (``foundation.backbones``: the last
block at stride 16 and the last at stride 32), each global-average-pooled, concatenated,
centred by a per-dimension median estimated on the catalogue, and thresholded at zero: one bit
per dimension. The paper's code is GoogLeNet's ``inception4e`` (832) + ``inception5b`` (1024):
1856 bits, 232 bytes; ImageNet MobileNetV2's ``features.13`` (96) + ``features.18`` (1280) give
1376 bits, 172 bytes; EfficientNet-Lite2's (120 + 1280) 1400 bits, 175 bytes. The activations
come after a ReLU, so thresholding them at zero without centring would set almost every bit; the
median makes each bit split the catalogue in two halves.

With ImageNet weights the features are used as they are (the paper's method) or fine-tuned;
from scratch, ``fashion-search train appearance`` trains them on the dump's product regions.

At inference the network (images to pooled activations) may run on ONNX Runtime (``ONNX_GRAPH``,
``load(runtime="onnx")``); the median and the binarisation stay here, in numpy.
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
from foundation.backbones import TAPS, build_trunk, check_backbone
from foundation.devices import parse_device
from foundation.modelfiles import Preprocess
from foundation.runtime import Graph, check_runtime, export_graph, open_graph
from foundation.schema import Schema

logger = logging.getLogger(__name__)

NAME = "appearance"
LAYERS = ("inception4e", "inception5b")  # the paper's GoogLeNet taps
FEATURE_DIMS = (832, 1024)  # their channels
DIMS = sum(FEATURE_DIMS)  # of the GoogLeNet code; a coder's own is ``coder.dims``
CODE_BYTES = (DIMS + 7) // 8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ONNX_GRAPH = Graph(NAME, "features", outputs=("features",))  # CodeNetwork: images -> pooled activations


class CodeNetwork(nn.Module):
    """A backbone up to its final tap; returns the pooled mid and final activations, concatenated.

    ``net`` is torchvision's ``create_feature_extractor`` graph, keeping the backbone's submodule
    names, so the state_dict keys (``net.<backbone module>...``) are those of the backbone.

    Args:
        backbone: one of ``foundation.backbones.BACKBONES``.
        pretrained: ``"imagenet"`` (its weights installed) or ``"none"``.
        num_classes: categories of a training head (0: no head).
        transform_input: GoogLeNet only, as saved with an ImageNet GoogLeNet.
    """

    def __init__(
        self,
        backbone: str = "googlenet",
        *,
        pretrained: str = "none",
        num_classes: int = 0,
        transform_input: bool | None = None,
    ):
        super().__init__()
        check_backbone(backbone)
        if backbone == "googlenet" and transform_input and pretrained == "none":
            # an ImageNet GoogLeNet's graph, rebuilt to load its saved weights into
            googlenet = torchvision.models.googlenet(
                weights=None, aux_logits=False, init_weights=False, transform_input=True
            )
            self.net = create_feature_extractor(googlenet, return_nodes=dict(zip(LAYERS, TAPS, strict=True)))
            channels = FEATURE_DIMS
        else:
            trunk = build_trunk(backbone, pretrained=pretrained)
            self.net = trunk.body
            channels = (trunk.mid_channels, trunk.final_channels)
        self.backbone, self.pretrained = backbone, pretrained
        self.transform_input = bool(transform_input) if backbone == "googlenet" else False
        if backbone == "googlenet" and pretrained == "imagenet":
            self.transform_input = True  # torchvision turns it on for its ImageNet GoogLeNet
        self.dims = int(sum(channels))
        self.head = nn.Linear(self.dims, num_classes) if num_classes else None

    def __deepcopy__(self, memo):
        # torchvision's DualGraphModule comes out of a deepcopy in training mode and without the
        # attributes set on it: give every module back its mode
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        for ours, theirs in zip(self.modules(), clone.modules()):
            theirs.training = ours.training
        return clone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, 3, H, W) normalised images -> (N, dims) pooled activations (>= 0)."""
        return self.pool(self.net(x))

    @staticmethod
    def pool(taps: dict[str, torch.Tensor]) -> torch.Tensor:
        """The network's taps to the (N, dims) features: each average-pooled, side by side."""
        return torch.cat([F.adaptive_avg_pool2d(taps[t], 1).flatten(1) for t in TAPS], 1)


def GoogLeNetFeatures(*, num_classes: int = 0, weights=None, transform_input: bool = False) -> CodeNetwork:  # noqa: N802
    """The paper's network: GoogLeNet's inception4e + inception5b (from scratch unless ``weights``)."""
    return CodeNetwork(
        "googlenet",
        pretrained="imagenet" if weights is not None else "none",
        num_classes=num_classes,
        transform_input=transform_input,
    )


class AppearanceCoder:
    """A code network with its preprocessing and centring median: images -> codes."""

    def __init__(
        self,
        net: CodeNetwork,
        *,
        image_size: int,
        median: np.ndarray | None = None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        device: str = "cpu",
    ):
        self.device = parse_device(device)
        self.net = net.to(self.device).eval()
        self.runner: nn.Module = self.net  # what computes the features: the net, or its ONNX graph
        self.image_size = int(image_size)
        self.dims = net.dims
        self.code_bytes = (self.dims + 7) // 8
        self.median = None if median is None else np.asarray(median, np.float32).reshape(self.dims)
        self.preprocess = Preprocess(self.image_size, tuple(map(float, mean)), tuple(map(float, std)))
        # the ranking weights chosen for codes of this kind (w_appearance, w_colour, w_shared), saved
        # with the model so that an index searches with them; None: the index's defaults
        self.ranking: dict[str, float] | None = None

    @classmethod
    def load(
        cls, models_dir: str | Path, *, device: str = "cpu", schema: Schema | None = None, runtime: str = "torch"
    ) -> AppearanceCoder:
        return load(models_dir, device=device, schema=schema, runtime=runtime)[0]

    @classmethod
    def imagenet(cls, backbone: str = "mobilenet_v2", *, image_size: int = 224, device: str = "cpu") -> AppearanceCoder:
        """ImageNet features (a clear error when their weights are not installed); fit the median
        with :meth:`fit_median` on the catalogue before coding."""
        return cls(CodeNetwork(backbone, pretrained="imagenet"), image_size=image_size, device=device)

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
        contents = modelfiles.ModelFile(
            state_dicts={"features": state, "median": {"median": torch.from_numpy(self.median.copy())}},
            config=config or {},
            preprocessing={**self.preprocess.to_dict(), "transform_input": bool(self.net.transform_input)},
            extra={
                "ranking": self.ranking,
                "dims": self.dims,
                "code_bytes": self.code_bytes,
                "backbone": self.net.backbone,
                "pretrained": self.net.pretrained,
            },
        )
        return modelfiles.save_model(models_dir, NAME, contents, schema=schema, metrics=metrics, data_hash=data_hash)

    def tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, S, S) network input of RGB images: squashed to S x S, ImageNet-normalised."""
        return self.preprocess.batch(images)

    @torch.inference_mode()
    def features(self, images: Sequence[Image.Image], *, batch_size: int = 64) -> np.ndarray:
        """(N, dims) float32 pooled activations of RGB region images."""
        if not len(images):
            return np.zeros((0, self.dims), np.float32)
        out = []
        for i in range(0, len(images), batch_size):
            x = self.tensor(images[i : i + batch_size]).to(self.device)
            out.append(self.runner(x).float().cpu().numpy())
        return np.concatenate(out)

    def binarize(self, features: np.ndarray) -> np.ndarray:
        """(N, dims) features -> (N, code_bytes) uint8 packed bits of ``feature > median``."""
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
    models_dir: str | Path, *, device: str = "cpu", schema: Schema | None = None, runtime: str = "torch"
) -> tuple[AppearanceCoder, Preprocess]:
    """(the saved coder on ``device``, its preprocessing: PIL image -> (3, S, S) tensor).

    ``coder.net(torch.stack([preprocess(im) for im in images]))`` gives the (N, 1856) features and
    ``coder.binarize`` their codes against the saved median; ``coder.encode(images)`` does both.
    A model trained on another schema is refused. ``runtime="onnx"``: the features come from the
    graph ``export_onnx`` cached (``foundation.runtime.GraphMissing`` when there is none).
    """
    check_runtime(runtime, device)
    ckpt = modelfiles.load_model(models_dir, NAME, schema=schema)
    pre = ckpt["preprocessing"]
    extra = ckpt.get("extra", {})
    net = CodeNetwork(
        extra.get("backbone", "googlenet"),  # files from before the backbone choice are GoogLeNet's
        pretrained="none",  # the saved state holds every weight
        transform_input=bool(pre.get("transform_input", False)),
    )
    state = {k: v for k, v in ckpt["state_dicts"]["features"].items() if not k.startswith("head.")}
    net.load_state_dict(state, strict=True)
    median = ckpt["state_dicts"]["median"]["median"].numpy()
    preprocess = Preprocess.from_saved(pre)
    coder = AppearanceCoder(
        net, image_size=preprocess.image_size, median=median, mean=preprocess.mean, std=preprocess.std, device=device
    )
    coder.ranking = extra.get("ranking")
    if runtime == "onnx":
        coder.runner = open_graph(ONNX_GRAPH, models_dir)
    return coder, coder.preprocess


def export_onnx(models_dir: str | Path, *, schema: Schema | None = None) -> Path:
    """Export the saved coder's network as its ONNX graph, cached in ``models_dir`` (see ``foundation.runtime``)."""
    coder = load(models_dir, schema=schema)[0]
    example = torch.zeros(2, 3, coder.image_size, coder.image_size)
    return export_graph(coder.net, example, ONNX_GRAPH, models_dir)


def untrained_coder(*, image_size: int = 64, seed: int = 0, calibration: Sequence[Image.Image] = ()) -> AppearanceCoder:
    """A randomly initialised coder (for tests and smoke runs), its median fitted on ``calibration``."""
    torch.manual_seed(seed)
    coder = AppearanceCoder(GoogLeNetFeatures(), image_size=image_size)
    if calibration:
        coder.fit_median(list(calibration))
    else:
        coder.median = np.zeros(coder.dims, np.float32)
    return coder
