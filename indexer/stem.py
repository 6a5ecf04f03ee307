"""One trunk pass for a crop that both crop readers read: the first stages they share, run once.

The attribute model's encoder and the appearance network are both a ``foundation.backbones`` trunk
fine-tuned from the same ImageNet weights, with their first stages frozen: those stages hold the
same weights in both model files (the default models: MobileNetV2's features.0-6, 108 tensors).
Where both read the same crop at the same size and
normalisation (a drawn rectangle, each garment auto finds), ``SharedStem.read`` runs those stages
once and each model's own later stages on the result. The stages are shared only when their
weights are equal, tensor by tensor, so the features are the separate passes' own (up to float
summation order); models that differ there read crops as before.

On ONNX Runtime the three parts are graphs of their own (``export_stem``, run by ``fashion-search
export onnx``), exported only where the torch models share stages and named after the model files
they come from: the shared stages and the attribute model's rest after ``attributes.pt``, the
appearance network's rest after ``appearance.pt``. A crop read by both, on one thread
(``benchmarks/runtime_bench.py``): torch 60.0 -> 44.2 ms, ONNX Runtime 26.6 -> 18.9 ms.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from appearance.model import AppearanceCoder, CodeNetwork
from attributes.model import Encoder
from attributes.predict import AttributePredictor
from foundation.backbones import N_STAGES, frozen_modules, split_body
from foundation.runtime import Graph, export_graph, open_graph

logger = logging.getLogger(__name__)

# the shared stages: images -> the activation after them; each model's rest: it -> its features
PREFIX_GRAPH = Graph("attributes", "stem", outputs=("stem",), optional=True)
ATTRIBUTES_GRAPH = Graph("attributes", "after-stem", outputs=("features",), input="stem", optional=True)
APPEARANCE_GRAPH = Graph("appearance", "after-stem", outputs=("features",), input="stem", optional=True)
GRAPHS = (PREFIX_GRAPH, ATTRIBUTES_GRAPH, APPEARANCE_GRAPH)


def _same_weights(a: nn.Module, b: nn.Module, modules: list[str]) -> bool:
    for name in modules:
        try:
            mine, theirs = a.get_submodule(name).state_dict(), b.get_submodule(name).state_dict()
        except AttributeError:
            return False
        if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k]) for k in mine):
            return False
    return True


class _Rest(nn.Module):
    """A model's later stages and what it makes of their taps: the activation after the shared
    stages -> the model's features."""

    def __init__(self, suffix: nn.Module, reduce: Callable[[dict[str, torch.Tensor]], torch.Tensor]):
        super().__init__()
        self.suffix, self.reduce = suffix, reduce

    def forward(self, stem: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.suffix(stem))


@dataclass(frozen=True, eq=False)
class SharedStem:
    """The shared stages (``prefix``) and each model's rest (``attributes``, ``appearance``): torch
    modules, or the ONNX Runtime graphs exported from them."""

    prefix: nn.Module
    attributes: nn.Module
    appearance: nn.Module
    stages: int | None = None  # how many (torch's; the graphs do not say)

    @classmethod
    def of(cls, predictor: AttributePredictor, coder: AppearanceCoder) -> SharedStem | None:
        """The stem ``predictor`` and ``coder`` share on torch, or None when they share none: other
        backbones, preprocessing or devices, differing weights, ONNX Runtime."""
        if not isinstance(predictor, AttributePredictor) or not isinstance(coder, AppearanceCoder):
            return None
        encoder = predictor.model.encoder  # both kinds of attribute model encode with a trunk
        if not isinstance(encoder, Encoder):  # ONNX Runtime's graph
            return None
        if coder.runner is not coder.net or coder.net.transform_input:  # ONNX Runtime; GoogLeNet's own input
            return None
        name = encoder.trunk.name
        if coder.net.backbone != name or predictor.preprocess != coder.preprocess or predictor.device != coder.device:
            return None
        mine, theirs = encoder.trunk.body, coder.net.net
        for stages in range(N_STAGES - 1, 0, -1):
            if _same_weights(mine, theirs, frozen_modules(name, stages)):
                try:
                    prefix, attributes = split_body(mine, name, stages)
                    _, appearance = split_body(theirs, name, stages)
                except ValueError as exc:
                    logger.info("the crop readers' trunks are not shared: %s", exc)
                    return None
                logger.info("the crop readers share their %s trunk's first %d stages", name, stages)
                rests = _Rest(attributes, Encoder.reduce), _Rest(appearance, CodeNetwork.pool)
                return cls(prefix.eval(), *rests, stages=stages)
        return None

    @classmethod
    def open(cls, models_dir: str | Path, predictor: AttributePredictor, coder: AppearanceCoder) -> SharedStem | None:
        """The stem's ONNX Runtime graphs of ``models_dir``'s current model files, or None where
        ``export_stem`` made none (the models share no stages, or the graphs are not exported)."""
        if any(not graph.path(models_dir).is_file() for graph in GRAPHS) or predictor.preprocess != coder.preprocess:
            return None
        logger.info("the crop readers share their first stages on ONNX Runtime")
        return cls(*(open_graph(graph, models_dir) for graph in GRAPHS))

    @torch.inference_mode()
    def read(
        self, predictor: AttributePredictor, coder: AppearanceCoder, crops: list
    ) -> tuple[torch.Tensor, np.ndarray, float]:
        """(the attribute encoder's features, the appearance codes) of ``crops``, as
        ``predictor.features(crops)`` and ``coder.encode(crops)`` give them, the shared stages run
        once; and the seconds the appearance network's rest took (the rest is the attributes')."""
        x = predictor.preprocess.batch(crops).to(predictor.device)
        stem = self.prefix(x)
        features = self.attributes(stem)
        t0 = time.perf_counter()
        codes = coder.binarize(self.appearance(stem).float().cpu().numpy())
        return features, codes, time.perf_counter() - t0


def export_stem(models_dir: str | Path, predictor: AttributePredictor, coder: AppearanceCoder) -> list[Path]:
    """Export the stem ``predictor`` and ``coder`` (the torch models of ``models_dir``) share as its
    three ONNX graphs, cached in ``models_dir``; none where they share no stages."""
    stem = SharedStem.of(predictor, coder)
    if stem is None:
        return []
    size = predictor.preprocess.image_size
    images = torch.zeros(2, 3, size, size)
    with torch.inference_mode():
        after = stem.prefix(images)
    parts = zip(GRAPHS, (stem.prefix, stem.attributes, stem.appearance), (images, after, after))
    return [export_graph(module, example, graph, models_dir) for graph, module, example in parts]
