"""Training the attribute models: teacher forcing with NLL, gradients through the encoder.

``train_attributes`` trains the CNN-LSTM (``kind="lstm"``, saved as ``attributes``) or the
binary-relevance baseline (``kind="binary"``, saved as ``attributes-baseline``) from a product
dump, through the shared loop (``foundation.training``). The best epoch by validation NLL is kept
(early stopping after ``patience`` epochs without improvement); ``<name>-last`` holds the latest
epoch with the optimiser, schedule and random states, so a run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from attributes.data import Examples, SequenceDataset, collate, group_targets, load_examples, preprocessing
from attributes.model import AttributeModelConfig, build_attribute_model
from foundation.backbones import default_backbone, default_pretrained, input_size
from foundation.dump import dumps_of
from foundation.modelfiles import ModelFile, dumps_hash, save_model
from foundation.schema import Schema, default_schema
from foundation.training import Checkpoint, RunOptions, TrainSettings, seed_everything, torch_threads, train_loop

logger = logging.getLogger(__name__)

MODEL_NAMES = {"lstm": "attributes", "binary": "attributes-baseline"}

# The paper's recipe, a ResNet-18 LSTM from scratch at 64 px: the scratch preset reproduces it, and
# the demo trains it where no ImageNet file is installed.
_RESNET_FROM_SCRATCH = dict(
    backbone="resnet18", pretrained="none", frozen_stages=0, image_size=64, warmup_share=0.15, label_smoothing=0.0
)


def _default_preset() -> dict:
    """The ImageNet recipe on ``default_backbone()``; where no ImageNet file is installed, its trunk
    trains from scratch, every stage of it (the figures below need the weights)."""
    backbone = default_backbone()
    if default_pretrained(backbone) == "imagenet":
        return dict(backbone=backbone, pretrained="imagenet")
    return dict(backbone=backbone, pretrained="none", frozen_stages=0)


def _demo_preset() -> dict:
    """The demo's: the ImageNet trunk at 96 px where its file is installed (a drawn rectangle's crop
    is read by ImageNet features, not by a net that saw 2,000 drawings), else the ResNet-18 from scratch.
    ``make demo`` trains it on one thread beside the detector (``cli.demo``): 2 minutes hold about
    3 of its 6 epochs there, and the schedule is fitted to them."""
    run = dict(threads=2, patience=3, max_minutes=2.0, resume_checkpoint=False)
    backbone = default_backbone()
    if default_pretrained(backbone) == "imagenet":
        return dict(
            backbone=backbone, pretrained="imagenet", frozen_stages=3, image_size=96, epochs=6, batch_size=64, **run
        )
    # 2,000 synthetic products (3,839 examples with the garment crops), held-out scenes: lr 3e-3 /
    # batch 32 / 5 epochs stayed at chance (guided colour 0.10 on garment crops); lr 1e-3 / batch 64
    # / 10 epochs reached 0.55 in 164 s.
    return dict(_RESNET_FROM_SCRATCH, epochs=10, batch_size=64, lr=1e-3, **run)


@dataclass(frozen=True)
class AttributeTrainConfig(TrainSettings):
    """How an attribute model is trained; the defaults are the ImageNet fine-tuning recipe (see ``PRESETS``)."""

    kind: str = "lstm"
    backbone: str = "mobilenet_v2"  # one of foundation.backbones.BACKBONES
    pretrained: str = "imagenet"  # "imagenet" (its file must be installed) or "none" (from scratch)
    frozen_stages: int = 3  # first trunk stages kept frozen (strides 2, 4, 8); 0 when from scratch
    image_size: int | None = None  # None: the backbone's own (224 px; 260 for efficientnet_lite2)
    embed_dim: int = 128
    hidden_dim: int = 256
    dropout: float = 0.2
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_share: float = 0.1  # of all steps, from lr / 25
    clip_grad_norm: float | None = None
    label_smoothing: float = 0.1  # of the training loss; validation NLL is plain
    label_weighting: bool = False  # weight each token's loss by frequency^-alpha
    alpha: float = 0.75
    garment_crops: bool = True  # also learn from each product's own box, where its dump row has one
    patience: int = 3
    max_minutes: float | None = 17.0  # stop after the epoch that crosses this budget (None: no limit)
    resume_checkpoint: bool = True  # write <name>-last.pt (weights + optimiser) after each epoch

    TRAINS = "attributes"
    FIXED_LOOP = {"finish_epoch": True}  # so the epoch the budget ends in is validated and can be kept
    PRESET_FIELDS = {
        "demo": _demo_preset(),
        # MobileNetV2 from ImageNet at 224 px, three stages frozen, 8 epochs: ~19 minutes on the clothing
        # train split here (2-core CPU); val NLL 0.270, category accuracy 0.827, micro P/R/F1
        # 0.888/0.893/0.891 (the scratch recipe: 0.661 and 0.786).
        "default": _default_preset(),
        # The from-scratch ResNet-18 recipe: 383 s on the clothing train split here (val NLL 0.509 after
        # 3 epochs, 0.293 after 20); val category accuracy 0.661, micro P/R/F1 0.782/0.790/0.786.
        "scratch": dict(_RESNET_FROM_SCRATCH, epochs=20, lr=2e-3, patience=3, max_minutes=20.0),
    }

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.image_size is not None and self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        self.model_config(1)  # checks kind, backbone, pretrained and frozen_stages
        super().__post_init__()

    def resolved(self) -> AttributeTrainConfig:
        """This config with an unset ``image_size`` made the backbone's own (``foundation.backbones.input_size``)."""
        if self.image_size is not None:
            return self
        return dataclasses.replace(self, image_size=input_size(self.backbone))

    def model_config(self, vocab_size: int) -> AttributeModelConfig:
        return AttributeModelConfig(
            kind=self.kind,
            backbone=self.backbone,
            pretrained=self.pretrained,
            frozen_stages=self.frozen_stages,
            embed_dim=self.embed_dim,
            hidden_dim=self.hidden_dim,
            dropout=self.dropout,
            vocab_size=vocab_size,
        )


PRESETS = AttributeTrainConfig.presets()


def token_weights(token_lists: list[list[int]], vocab_size: int, alpha: float) -> torch.Tensor:
    """Per-token loss weights ``freq^-alpha``, scaled to mean 1 over the training tokens, capped at 10."""
    counts = torch.zeros(vocab_size)
    for seq in token_lists:
        counts.index_add_(0, torch.tensor(seq[1:]), torch.ones(len(seq) - 1))
    w = torch.where(counts > 0, counts.clamp(min=1) ** -alpha, torch.zeros_like(counts))
    w = w / ((w * counts).sum() / counts.sum())
    return w.clamp(max=10.0)


def sequence_loss(
    logits: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor | None = None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean NLL per target token (PAD ignored), ``logits`` (B, T - 1, V) being the model's on ``tokens[:, :-1]``."""
    target = tokens[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        weight=weights,
        ignore_index=0,
        label_smoothing=label_smoothing,
    )


def baseline_loss(
    logits: list[torch.Tensor], tokens: torch.Tensor, schema: Schema, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean over groups of each group's cross-entropy (value or "absent")."""
    target = group_targets(tokens.cpu(), schema).to(logits[0].device)
    return torch.stack(
        [F.cross_entropy(lg.float(), target[:, i], label_smoothing=label_smoothing) for i, lg in enumerate(logits)]
    ).mean()


@torch.inference_mode()
def validation_loss(model, loader, kind: str, schema: Schema, device) -> float:
    """Mean loss per target token (LSTM) or per group (baseline) over a loader (the loop sets eval mode and AMP)."""
    plain = AttributeTask(model, kind, schema)  # no token weights, no label smoothing
    total, n = 0.0, 0
    for images, tokens in loader:
        images, tokens = images.to(device), tokens.to(device)
        loss = plain.batch_loss(images, tokens)
        count = int((tokens[:, 1:] != 0).sum()) if kind == "lstm" else tokens.shape[0]
        total += float(loss) * count
        n += count
    return total / max(n, 1)


class AttributeTask:
    """The attribute model as the training loop sees it: teacher-forced NLL (or the baseline's loss)."""

    def __init__(
        self, model, kind: str, schema: Schema, weights: torch.Tensor | None = None, label_smoothing: float = 0.0
    ):
        self.model, self.kind, self.schema, self.weights = model, kind, schema, weights
        self.label_smoothing = label_smoothing

    def parameters(self):
        return self.model.parameters()

    def loss(self, batch, device: torch.device) -> torch.Tensor:
        images, tokens = (t.to(device, non_blocking=True) for t in batch)
        if self.weights is not None and self.weights.device != device:
            self.weights = self.weights.to(device)
        return self.batch_loss(images, tokens)

    def batch_loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The batch's loss, ``images`` (B, 3, H, W) and ``tokens`` (B, T) on the model's device."""
        if self.kind == "lstm":
            logits = self.model(images, tokens[:, :-1])
            return sequence_loss(logits, tokens, self.weights, self.label_smoothing)
        return baseline_loss(self.model(images), tokens, self.schema, self.label_smoothing)


def train_attributes(
    train_dump: str | Path | list[str | Path],
    out_dir: str | Path,
    *,
    val_dump: str | Path | None = None,
    config: AttributeTrainConfig | str = "default",
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train on ``train_dump``, save the best model into ``out_dir``; returns the metrics.

    ``config`` is a config or the name of one of ``PRESETS``. Without ``val_dump`` the training
    loss decides which epoch is kept. With ``resume`` a run continues from ``<name>-last.pt``
    exactly where it stopped (refusing one made with other learning settings).
    """
    if isinstance(config, str):
        config = AttributeTrainConfig.preset(config)
    config = config.resolved()  # checkpoints and the saved config record the size trained at
    schema = default_schema()  # the one the models are saved with and checked against
    name = MODEL_NAMES[config.kind]
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    # the model first: a missing ImageNet file fails here, before the data is read
    seed_everything(config.seed)  # the same initial weights for the same seed
    mcfg = config.model_config(len(schema.tokens))
    model = build_attribute_model(mcfg, schema=schema)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "%s on %s (%s, %d of 5 stages frozen): %.2fM of %.2fM parameters trained",
        name,
        config.backbone,
        config.pretrained,
        config.frozen_stages,
        trainable / 1e6,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    t_data = time.perf_counter()
    with torch_threads(config.threads):
        train_ex = Examples.concat(
            [
                load_examples(dump, config.image_size, schema=schema, progress=progress, crops=config.garment_crops)
                for dump in dumps_of(train_dump)
            ]
        )
        val_ex = load_examples(val_dump, config.image_size, schema=schema, progress=progress) if val_dump else None
    t_read = time.perf_counter() - t_data
    logger.info(
        "%d training products (%d skipped)%s, read in %.0fs",
        len(train_ex),
        train_ex.skipped,
        f", {len(val_ex)} validation" if val_ex else "",
        t_read,
    )
    train_loader = DataLoader(
        SequenceDataset(train_ex, config.image_size, train=True),
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(config.seed),
        num_workers=config.workers,
        drop_last=len(train_ex) > config.batch_size,
    )
    val_fn = None
    if val_ex:
        val_loader = DataLoader(
            SequenceDataset(val_ex, config.image_size, train=False),
            batch_size=64,
            collate_fn=collate,
            num_workers=config.workers,
        )

        def val_fn(model, device) -> float:
            return validation_loss(model, val_loader, config.kind, schema, device)

    weights = None
    if config.label_weighting and config.kind == "lstm":
        weights = token_weights(train_ex.tokens, len(schema.tokens), config.alpha)
    prep = preprocessing(config.image_size)
    cfg_dict = {"model": mcfg.to_dict(), "train": dataclasses.asdict(config)}
    data_hash = dumps_hash(dumps_of(train_dump))

    def save_best(model, record: dict) -> None:
        metrics = {
            "best_epoch": record["epoch"],
            "train_loss": record["train_loss"],
            "val_loss": record.get("val_loss"),
            "train_products": len(train_ex),
            "val_products": len(val_ex) if val_ex else 0,
        }
        save_model(
            out_dir,
            name,
            ModelFile(state_dicts={"model": model.state_dict()}, config=cfg_dict, preprocessing=prep),
            schema=schema,
            metrics=metrics,
            data_hash=data_hash,
        )

    checkpoint = Checkpoint(
        out_dir, f"{name}-last", config.learning_settings(), prep, schema=schema, data_hash=data_hash
    )
    options = RunOptions(
        checkpoint=checkpoint, resume=resume, val_fn=val_fn, on_best=save_best, progress=progress, desc=name
    )
    task = AttributeTask(model, config.kind, schema, weights, config.label_smoothing)
    run = train_loop(task, train_loader, config.loop_config(), options)
    if run.best is None:  # no epoch finished (a budget spent within the first): keep what there is
        logger.warning("%s: no epoch finished; saving the weights as they stand", name)
        save_best(model, {"epoch": 0, "train_loss": run.last_loss})
    result = {
        "model": name,
        "best_loss": round(run.best, 4) if run.best is not None else None,
        "epochs_run": len(run.history),
        "epochs_planned": run.epochs_planned,  # fewer than configured when the time budget holds fewer
        "steps": run.steps,
        "stopped": run.stopped,
        "history": run.history,
        "train_products": len(train_ex),
        "val_products": len(val_ex) if val_ex else 0,
        "seconds": round(time.perf_counter() - t_start, 1),
        "seconds_reading": round(t_read, 1),
        "device": run.device,
    }
    logger.info("%s trained in %.0fs (%s); best loss %s", name, result["seconds"], run.stopped, result["best_loss"])
    return result
