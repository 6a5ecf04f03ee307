"""Training the detector from a dump's ``boxes`` (checkpoint every epoch, resume, AMP on cuda)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from detector.data import DetectionDataset, collate, products_with_boxes
from detector.model import DetectorConfig, build_detector, class_names
from foundation.modelfiles import file_hash, load_model, save_model
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

LAST = "detector-last"  # the resumable checkpoint, beside detector.pt


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Settings of one training run (the model's own are in ``model``)."""

    model: DetectorConfig = field(default_factory=DetectorConfig)
    epochs: int = 12
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    max_minutes: float | None = 20.0  # stop after the step crossing this
    device: str = "auto"  # auto, cpu or cuda
    amp: bool = True  # on cuda only
    threads: int = 2
    workers: int = 1
    seed: int = 0
    eval_limit: int = 200  # validation images measured at the end

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes!r}")

    @classmethod
    def demo(cls) -> DetectorTrainConfig:
        """The demo's preset: small inputs, about 3 minutes on a 2-core CPU.

        Too short for a from-scratch Faster R-CNN to find garments (measured on the synthetic
        scenes: every detection under the 0.3 score threshold, so describe() falls back to the
        whole photo, flagged); it keeps the pipeline whole and the index step quick (128 px
        inputs: about 110 ms an image against 230 ms at 192 px).
        """
        return cls(
            model=DetectorConfig(min_size=128, max_size=160),
            epochs=2,
            batch_size=8,
            lr=3e-3,
            warmup_steps=30,
            max_minutes=3.0,
            eval_limit=100,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorTrainConfig:
        return cls(**{**d, "model": DetectorConfig(**d["model"])})


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    return name


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train_detector(
    train_dump: str | Path,
    out_dir: str | Path,
    *,
    val_dump: str | Path | None = None,
    config: DetectorTrainConfig = DetectorTrainConfig(),
    progress: bool = True,
    resume: bool = False,
    schema: Schema | None = None,
) -> dict:
    """Train on ``train_dump``'s boxes; write ``out_dir/detector.pt`` (and ``detector-last.pt``).

    Returns a summary: epochs and steps run, seconds, final loss and, with ``val_dump``, Table 3's
    figures on up to ``config.eval_limit`` of its images.
    """
    schema = schema or default_schema()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    device = _device(config.device)
    classes = class_names(schema)
    products = products_with_boxes(train_dump, schema=schema)
    data = DetectionDataset(products, classes, max_side=config.model.max_size, flip=True, seed=config.seed)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
    )
    model = build_detector(config.model, num_classes=len(classes)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total, config.warmup_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device == "cuda")
    out_dir = Path(out_dir)
    start_epoch, step, elapsed = 0, 0, 0.0
    if resume:
        ckpt = load_model(out_dir, LAST, schema=schema)
        saved = DetectorTrainConfig.from_dict(ckpt["config"])
        if saved.model != config.model:
            raise ValueError(
                f"cannot resume: {out_dir / (LAST + '.pt')} was built with {saved.model}, not {config.model}"
            )
        model.load_state_dict(ckpt["state_dicts"]["model"])
        optimizer.load_state_dict(ckpt["state_dicts"]["optimizer"])
        scheduler.load_state_dict(ckpt["state_dicts"]["scheduler"])
        start_epoch, step, elapsed = ckpt["extra"]["epoch"], ckpt["extra"]["step"], ckpt["extra"]["seconds"]
        logger.info("resuming at epoch %d (step %d)", start_epoch, step)
    data_hash = file_hash(train_dump)
    preprocessing = {"input": "RGB float [0, 1]", "min_size": config.model.min_size, "max_size": config.model.max_size}
    t0 = time.perf_counter() - elapsed
    losses: list[float] = []
    stopped = False
    epoch = start_epoch
    for epoch in range(start_epoch, config.epochs):
        model.train()
        bar = tqdm(loader, desc=f"detector epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress)
        for images, targets in bar:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device_type=device, enabled=config.amp and device == "cuda"):
                loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if config.max_minutes is not None and time.perf_counter() - t0 > config.max_minutes * 60:
                stopped = True
                break
        save_model(
            out_dir,
            LAST,
            state_dicts={
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
            config=config.to_dict(),
            preprocessing=preprocessing,
            schema=schema,
            data_hash=data_hash,
            extra={"epoch": epoch + 1, "step": step, "seconds": time.perf_counter() - t0},
        )
        if stopped:
            logger.info("time limit of %.1f min reached in epoch %d", config.max_minutes, epoch + 1)
            break
    seconds = time.perf_counter() - t0
    result = {
        "epochs": epoch + 1 if total else 0,
        "steps": step,
        "seconds": round(seconds, 1),
        "images": len(data),
        "stopped_by_time": stopped,
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4) if losses else None,
        "config": config.to_dict(),
    }
    metrics = {}
    if val_dump is not None:
        from detector.evaluate import evaluate_model
        from detector.predict import GarmentDetector

        detector = GarmentDetector.from_model(model, schema=schema, device=device)
        metrics = evaluate_model(detector, val_dump, schema=schema, limit=config.eval_limit, progress=progress)
        result["val"] = metrics
    save_model(
        out_dir,
        "detector",
        state_dicts={"model": model.state_dict()},
        config=config.to_dict(),
        preprocessing=preprocessing,
        schema=schema,
        data_hash=data_hash,
        metrics={
            "train_seconds": result["seconds"],
            "steps": step,
            **{k: v for k, v in metrics.items() if k in ("non_guided", "guided", "fallback_rate")},
        },
    )
    return result
