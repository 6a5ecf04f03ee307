"""The attribute models: a ``foundation.backbones`` trunk as the image encoder, with an LSTM decoder
over attribute tokens, and the binary-relevance baseline (the same encoder, one softmax per group).

The sequence model follows the paper: the image features initialise the LSTM's state and are fed
beside each token's embedding, and a softmax over the whole token vocabulary predicts the next
``group=value`` token (BOS first, EOS last). Guided decoding is a function of the decoder
(``attributes.decode``), not a flag of the model.

The encoder is a typed choice of backbone (``mobilenet_v2``, ``resnet18``, ``resnet50``,
``googlenet``, ``efficientnet_lite2``), from ImageNet (``pretrained="imagenet"``, its file must be
installed; never downloaded) or from scratch (``"none"``); its final tap, average-pooled, is the
image's features.
A pretrained trunk may keep its first ``frozen_stages`` stages (by stride: 2, 4, 8, 16, 32) frozen,
batch-norm statistics included, so training is cheaper and the general low-level filters stay.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from foundation.backbones import BACKBONES, N_STAGES, build_trunk, check_backbone, check_pretrained, frozen_modules
from foundation.modelfiles import ModelError
from foundation.schema import PAD, Schema

logger = logging.getLogger(__name__)

KINDS = ("lstm", "binary")


@dataclass(frozen=True)
class AttributeModelConfig:
    """What the model is built from; saved with its weights."""

    kind: str = "lstm"  # "lstm" (the sequence model) or "binary" (the binary-relevance baseline)
    backbone: str = "resnet18"  # one of foundation.backbones.BACKBONES
    pretrained: str = "none"  # "imagenet" (its installed ImageNet weights) or "none" (from scratch)
    frozen_stages: int = 0  # first trunk stages kept frozen (pretrained only: a frozen random layer never learns)
    embed_dim: int = 128
    hidden_dim: int = 256
    dropout: float = 0.2
    vocab_size: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown attribute model kind {self.kind!r}; known: {', '.join(KINDS)}")
        check_backbone(self.backbone)
        check_pretrained(self.pretrained)
        if not 0 <= self.frozen_stages <= N_STAGES:
            raise ValueError(f"frozen_stages must be between 0 and {N_STAGES}, got {self.frozen_stages}")
        if self.frozen_stages and self.pretrained != "imagenet":
            raise ValueError(
                f"frozen_stages={self.frozen_stages} needs pretrained='imagenet': a frozen stage of a trunk "
                "trained from scratch would never learn (use frozen_stages=0)"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """Images (N, 3, H, W), ImageNet-normalised, to features (N, width): the trunk's final tap, average-pooled.

    The first ``frozen_stages`` stages take no gradient and stay in eval mode (their batch-norm
    statistics are ImageNet's), whatever mode the model is put in.
    """

    def __init__(self, backbone: str, *, pretrained: str, frozen_stages: int = 0):
        super().__init__()
        self.trunk = build_trunk(backbone, pretrained=pretrained)
        self.width = self.trunk.final_channels
        self.frozen = frozen_modules(backbone, frozen_stages)
        for name in self.frozen:
            self.trunk.body.get_submodule(name).requires_grad_(False)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        for name in self.frozen:
            self.trunk.body.get_submodule(name).train(False)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.trunk(images))

    @staticmethod
    def reduce(taps: dict[str, torch.Tensor]) -> torch.Tensor:
        """The trunk's taps to the features: the final tap, average-pooled."""
        return taps["final"].mean(dim=(2, 3))


class LSTMAttributeModel(nn.Module):
    """Encoder features -> LSTM over attribute tokens -> logits over the vocabulary."""

    def __init__(self, cfg: AttributeModelConfig, encoder: nn.Module, feat_dim: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.project = nn.Sequential(nn.Linear(feat_dim, cfg.embed_dim), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.init_h = nn.Linear(feat_dim, cfg.hidden_dim)
        self.init_c = nn.Linear(feat_dim, cfg.hidden_dim)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(2 * cfg.embed_dim, cfg.hidden_dim, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, cfg.vocab_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image features, (B, feat_dim), from normalised images (B, 3, H, W)."""
        return self.encoder(images)

    def init_state(self, feats: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(projected features (B, E), LSTM state ((1, B, H), (1, B, H))) for the decoder."""
        h = torch.tanh(self.init_h(feats)).unsqueeze(0)
        c = torch.tanh(self.init_c(feats)).unsqueeze(0)
        return self.project(feats), (h.contiguous(), c.contiguous())

    def step(self, proj: torch.Tensor, tokens: torch.Tensor, state):
        """Logits (B, T, V) for the next token after ``tokens`` (B, T), and the new state."""
        emb = self.embed(tokens)
        x = torch.cat([emb, proj.unsqueeze(1).expand(-1, emb.shape[1], -1)], dim=-1)
        y, state = self.lstm(x, state)
        return self.out(self.drop(y)), state

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V): position t predicts ``tokens[:, t + 1]``.

        Args:
            images: (B, 3, H, W) normalised.
            tokens: (B, T) token ids starting with BOS, padded with PAD (id 0).
        """
        proj, state = self.init_state(self.encode(images))
        logits, _ = self.step(proj, tokens, state)
        return logits


class BinaryRelevanceModel(nn.Module):
    """The baseline: the same encoder, one independent softmax per group over its values plus "absent"."""

    def __init__(self, cfg: AttributeModelConfig, encoder: nn.Module, feat_dim: int, group_sizes: list[int]):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleList(nn.Linear(feat_dim, n + 1) for n in group_sizes)  # last class: absent

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One logits tensor (B, values + 1) per group, in schema order."""
        f = self.drop(self.encoder(images))
        return [head(f) for head in self.heads]


def build_attribute_model(cfg: AttributeModelConfig, *, schema: Schema, load_pretrained: bool = True) -> nn.Module:
    """The model ``cfg`` describes, for ``schema``'s vocabulary.

    The trunk starts from ImageNet when ``cfg.pretrained`` says so (a missing file is
    ``foundation.weights.WeightsMissing``, never a download), else from random weights; with
    ``load_pretrained=False`` it is random either way, for weights about to come from a file.
    """
    if cfg.vocab_size != len(schema.tokens):
        raise ValueError(f"config vocab_size {cfg.vocab_size} does not match the schema's {len(schema.tokens)} tokens")
    if schema.tokens[0] != PAD:
        raise ValueError("the schema's token 0 must be the padding token")
    pretrained = cfg.pretrained if load_pretrained else "none"
    encoder = Encoder(cfg.backbone, pretrained=pretrained, frozen_stages=cfg.frozen_stages)
    if cfg.kind == "lstm":
        return LSTMAttributeModel(cfg, encoder, encoder.width)
    return BinaryRelevanceModel(cfg, encoder, encoder.width, [len(g.values) for g in schema.groups])


# -- saved models ---------------------------------------------------------------------------------

LEGACY_DEPTHS = {18: "resnet18", 50: "resnet50"}  # the old ResNet encoders foundation.backbones still builds


def from_saved(
    saved_cfg: dict, state_dict: dict, *, what: str = "attribute model"
) -> tuple[AttributeModelConfig, dict]:
    """(config, state_dict) of a saved model, old ones converted.

    Models saved before the encoder became a backbone choice had a torchvision ResNet
    (``depth``, ``pretrained`` None or "imagenet") whose parameters sat under ``encoder.``; the
    ResNet-18 and -50 ones load into today's trunk unchanged (the same modules, under
    ``encoder.trunk.body.``). Other depths are refused with what to do.
    """
    if "backbone" in saved_cfg:
        return AttributeModelConfig(**saved_cfg), state_dict
    depth = saved_cfg.get("depth")
    if depth not in LEGACY_DEPTHS:
        raise ModelError(
            f"the {what} has a ResNet-{depth} encoder, which is no longer built (backbones: {', '.join(BACKBONES)}): "
            "retrain it with `fashion-search train attributes`"
        )
    cfg = {k: v for k, v in saved_cfg.items() if k != "depth"}
    cfg.update(backbone=LEGACY_DEPTHS[depth], pretrained=saved_cfg.get("pretrained") or "none", frozen_stages=0)
    old, new = "encoder.", "encoder.trunk.body."
    renamed = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state_dict.items()}
    logger.info("%s: an old ResNet-%d checkpoint, loaded into the resnet trunk", what, depth)
    return AttributeModelConfig(**cfg), renamed
