"""One trunk pass for a crop that both crop readers read: the first stages they share, run once.

The attribute model's encoder and the appearance network are both a ``foundation.backbones`` trunk
fine-tuned from the same ImageNet weights, with their first stages frozen: those stages hold the
same weights in both model files (the default models: MobileNetV2's features.0-6, 108 tensors,
14.8 of a 25.7 ms pass on one thread). Where both read the same crop at the same size and
normalisation (a drawn rectangle, each garment auto finds), ``SharedStem.read`` runs those stages
once and each model's own later stages on the result. The stages are shared only when their
weights are equal, tensor by tensor, so the features are the separate passes' own (up to float
summation order); models that differ there, or that run on ONNX Runtime, read crops as before.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from appearance.model import AppearanceCoder
from attributes.model import Encoder
from attributes.predict import AttributePredictor
from foundation.backbones import N_STAGES, frozen_modules, split_body

logger = logging.getLogger(__name__)


def _same_weights(a: nn.Module, b: nn.Module, modules: list[str]) -> bool:
    for name in modules:
        try:
            mine, theirs = a.get_submodule(name).state_dict(), b.get_submodule(name).state_dict()
        except AttributeError:
            return False
        if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k]) for k in mine):
            return False
    return True


@dataclass(frozen=True, eq=False)
class SharedStem:
    """The shared first ``stages`` stages (``prefix``) and each model's rest of its trunk."""

    prefix: nn.Module
    attributes: nn.Module
    appearance: nn.Module
    stages: int

    @classmethod
    def of(cls, predictor: AttributePredictor, coder: AppearanceCoder) -> SharedStem | None:
        """The stem ``predictor`` and ``coder`` share, or None when they
        share none: other backbones, preprocessing or devices, differing weights, ONNX Runtime."""
        if not isinstance(predictor, AttributePredictor) or not isinstance(coder, AppearanceCoder):
            return None
        encoder = predictor.model.encoder  # both kinds of attribute model encode with a trunk
        if not isinstance(encoder, Encoder):
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
                return cls(prefix.eval(), attributes.eval(), appearance.eval(), stages)
        return None

    @torch.inference_mode()
    def read(
        self, predictor: AttributePredictor, coder: AppearanceCoder, crops: list
    ) -> tuple[torch.Tensor, np.ndarray, float]:
        """(the attribute encoder's features, the appearance codes) of ``crops``, as
        ``predictor.features(crops)`` and ``coder.encode(crops)`` give them, the shared stages run
        once; and the seconds the appearance network's own stages took (the rest is the attributes')."""
        x = predictor.preprocess.batch(crops).to(predictor.device)
        stem = self.prefix(x)
        features = predictor.model.encoder.reduce(self.attributes(stem))
        t0 = time.perf_counter()
        codes = coder.binarize(coder.net.pool(self.appearance(stem)).float().cpu().numpy())
        return features, codes, time.perf_counter() - t0
