"""The attribute models: a torchvision ResNet encoder with an LSTM decoder over attribute tokens,
and the binary-relevance baseline (the same encoder, one independent softmax per group).

The sequence model follows the paper: the image features initialise the LSTM's state and are fed
beside each token's embedding, and a softmax over the whole token vocabulary predicts the next
``group=value`` token (BOS first, EOS last). Guided decoding is a function of the decoder
(``attributes.decode``), not a flag of the model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torchvision
from torch import nn

from foundation.schema import PAD, Schema

logger = logging.getLogger(__name__)

RESNETS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
KINDS = ("lstm", "binary")


@dataclass(frozen=True)
class AttributeModelConfig:
    """What the model is built from; saved with its weights."""

    kind: str = "lstm"  # "lstm" (the sequence model) or "binary" (the binary-relevance baseline)
    depth: int = 18
    embed_dim: int = 128
    hidden_dim: int = 256
    dropout: float = 0.2
    vocab_size: int = 0
    pretrained: str | None = None  # None (from scratch) or "imagenet" (torchvision weights)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown attribute model kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.depth not in RESNETS:
            raise ValueError(f"unknown ResNet depth {self.depth}; known: {', '.join(map(str, RESNETS))}")
        if self.pretrained not in (None, "imagenet"):
            raise ValueError(f"unknown pretrained weights {self.pretrained!r}; known: imagenet")

    def to_dict(self) -> dict:
        return asdict(self)


def imagenet_weights(depth: int):
    """torchvision's ImageNet weights for ``resnet{depth}``, or a clear error when they cannot be had."""
    enum = torchvision.models.get_model_weights(RESNETS[depth]).DEFAULT
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, OSError, hash errors: all mean "not available here"
        raise RuntimeError(
            f"ImageNet weights for {RESNETS[depth]} are neither in the torch cache ({torch.hub.get_dir()}) "
            f"nor downloadable here ({type(exc).__name__}: {exc}); train from scratch (no --pretrained) "
            f"or put {enum.url.rsplit('/', 1)[-1]} in {torch.hub.get_dir()}/checkpoints"
        ) from exc


def build_encoder(*, depth: int = 18, pretrained: str | None = None) -> tuple[nn.Module, int]:
    """A ResNet without its classifier, and its feature width. Weights are fetched only when asked."""
    net = torchvision.models.get_model(RESNETS[depth], weights=None)
    if pretrained == "imagenet":
        net.load_state_dict(imagenet_weights(depth))
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


class LSTMAttributeModel(nn.Module):
    """ResNet features -> LSTM over attribute tokens -> logits over the vocabulary."""

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


def build_attribute_model(cfg: AttributeModelConfig, *, schema: Schema) -> nn.Module:
    """The model ``cfg`` describes, for ``schema``'s vocabulary; weights random unless ``cfg.pretrained``."""
    if cfg.vocab_size != len(schema.tokens):
        raise ValueError(f"config vocab_size {cfg.vocab_size} does not match the schema's {len(schema.tokens)} tokens")
    if schema.tokens[0] != PAD:
        raise ValueError("the schema's token 0 must be the padding token")
    encoder, width = build_encoder(depth=cfg.depth, pretrained=cfg.pretrained)
    if cfg.kind == "lstm":
        return LSTMAttributeModel(cfg, encoder, width)
    return BinaryRelevanceModel(cfg, encoder, width, [len(g.values) for g in schema.groups])
