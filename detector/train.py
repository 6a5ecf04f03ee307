"""Training the detector from a dump's ``boxes``, through the shared loop (``foundation.training``).

The loop checkpoints ``detector-last`` after every epoch and when the time budget stops it
mid-epoch; ``resume`` continues exactly from there, refusing a checkpoint made with another model
config or other learning settings. The time budget is this run's (a resumed run gets a fresh one).

The default preset is sized for the street-photo mix (several dumps trained on together)::

    fashion-search convert ccp ../shared/datasets/ccp --out DATA/ccp --split train
    fashion-search convert scenes ../shared/datasets/clothing --out DATA/street --n 1200 --seed 11 \
        --split train --backgrounds ../shared/datasets/ccp
    fashion-search convert scenes ../shared/datasets/clothing --out DATA/scenes --n 1200 --seed 12 --split train
    fashion-search train detector --data DATA/ccp/products.jsonl --data DATA/street/products.jsonl \
        --data DATA/scenes/products.jsonl --out MODELS
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from detector.data import DetectionDataset, collate, products_with_boxes
from detector.model import DetectorConfig, build_detector, class_groups, class_names
from foundation.dump import dumps_of
from foundation.modelfiles import ModelFile, dumps_hash, save_model
from foundation.schema import default_schema
from foundation.training import Checkpoint, RunOptions, TrainSettings, seed_everything, torch_threads, train_loop

logger = logging.getLogger(__name__)

LAST = "detector-last"  # the resumable checkpoint, beside detector.pt
SAVED_METRICS = (
    "non_guided",
    "guided",
    "guided_by_category",
    "fallback_rate",
    "recall@0.5",
    "top1@0.5",
    "ms_per_image",
)


@dataclass(frozen=True)
class DetectorTrainConfig(TrainSettings):
    """Settings of one training run (the model's own are in ``model``)."""

    model: DetectorConfig = field(default_factory=DetectorConfig)
    epochs: int = 2
    batch_size: int = 4
    lr: float = 5e-4  # AdamW: the heads are new, the backbone's trained stages start from ImageNet
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear from lr / 25, then cosine to 0
    clip_grad_norm: float | None = 10.0
    max_minutes: float | None = 18.0  # stop after the step crossing this
    workers: int = 1
    eval_limit: int = 200  # validation images measured at the end

    TRAINS = "detector"
    RUN_SETTINGS = (*TrainSettings.RUN_SETTINGS, "eval_limit")
    PRESET_FIELDS = {
        # The demo's synthetic catalogue (1,700 images, 1-3 drawn garments each): one epoch at 128 px
        # from the ImageNet backbone, ~2 minutes on one thread beside the attribute model (cli.demo).
        # RoI pooling sampled once a bin and 32 RoIs an image make a step 0.31 s against 0.85 s
        # (torchvision's 2 samples, 64 RoIs; batch 8, 2 threads); 30 proposals at inference (a
        # synthetic scene holds 1-3 garments) keep held-out mAP@.5 and halve the detector's time
        # in the demo's index (benchmarks/detector_head.py).
        "demo": dict(
            model=DetectorConfig(
                min_size=128,
                max_size=160,
                roi_sampling_ratio=1,
                box_batch_size_per_image=32,
                rpn_post_nms_top_n_test=30,
            ),
            epochs=1,
            batch_size=8,
            lr=1e-3,
            warmup_steps=20,
            max_minutes=3.0,
            eval_limit=100,
        ),
        # The street-photo mix (ccp train, the same photos with catalogue cut-outs pasted on,
        # composed shop scenes: ~2,900 images) at ~4.5 images/s on 2 CPU cores: an epoch takes
        # 625-680 s, so the 18-minute budget holds 1.5-1.9 of the 2 epochs and the schedule is fitted
        # to the steps it holds (foundation.training: it anneals there, its last epoch cut short).
        "default": {},
    }

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size!r}")
        super().__post_init__()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorTrainConfig:
        return cls(**{**d, "model": DetectorConfig(**d["model"])})


PRESETS = DetectorTrainConfig.presets()


class DetectorTask:
    """The detector as the training loop sees it: the sum of torchvision's four losses."""

    def __init__(self, model):
        self.model = model

    def parameters(self):
        return self.model.parameters()

    def loss(self, batch, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = self.model(images, targets)
        return sum(losses.values()), {k: float(v.detach()) for k, v in losses.items()}


def train_detector(
    train_dump: str | Path | list[str | Path],
    out_dir: str | Path,
    *,
    val_dump: str | Path | None = None,
    config: DetectorTrainConfig | str = "default",
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Train on ``train_dump``'s boxes; write ``out_dir/detector.pt`` (and ``detector-last.pt``).

    ``train_dump`` is a dump or a list of dumps whose products are trained on together.
    ``config`` is a config or the name of one of ``PRESETS``; its ``pretrained="auto"`` is
    resolved here (ImageNet where installed) and the resolved config is saved. Returns a summary: epochs and steps
    run, seconds, final loss and, with ``val_dump``, Table 3's figures on up to
    ``config.eval_limit`` of its images.
    """
    if isinstance(config, str):
        config = DetectorTrainConfig.preset(config)
    schema = default_schema()  # the one the models are saved with and checked against
    config = replace(config, model=config.model.resolved())
    dumps = dumps_of(train_dump)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    classes = class_names(schema)
    products = products_with_boxes(dumps, schema=schema)
    data = DetectionDataset(products, classes, max_side=config.model.max_size, flip=True)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=config.workers,  # not persistent: fresh workers each epoch keep resume exact
        generator=torch.Generator().manual_seed(config.seed),
    )
    seed_everything(config.seed)  # the same initial weights for the same seed
    model = build_detector(config.model, num_classes=len(classes), groups=class_groups(schema))
    data_hash = dumps_hash(dumps)
    preprocessing = {
        "input": "RGB float [0, 1]",
        "resize": "none",  # the model resizes to min_size / max_size itself
        "min_size": config.model.min_size,
        "max_size": config.model.max_size,
    }
    checkpoint = Checkpoint(
        out_dir, LAST, config.learning_settings(), preprocessing, schema=schema, data_hash=data_hash
    )
    options = RunOptions(checkpoint=checkpoint, resume=resume, progress=progress, desc="detector")
    run = train_loop(DetectorTask(model), loader, config.loop_config(), options)
    result = {
        "epochs": run.epochs_done,
        "epochs_planned": run.epochs_planned,
        "steps": run.steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "images": len(data),
        "stopped": run.stopped,
        "stopped_by_time": run.stopped == "time_budget",
        "final_loss": round(run.last_loss, 4) if run.last_loss is not None else None,
        "history": run.history,
        "config": config.to_dict(),
    }
    metrics = {}
    if val_dump is not None:
        from detector.evaluate import evaluate_model
        from detector.predict import GarmentDetector

        detector = GarmentDetector.from_model(model, schema=schema, device=run.device)
        with torch_threads(config.threads):
            metrics = evaluate_model(detector, val_dump, schema=schema, limit=config.eval_limit, progress=progress)
        result["val"] = metrics
    save_model(
        out_dir,
        "detector",
        ModelFile(state_dicts={"model": model.state_dict()}, config=config.to_dict(), preprocessing=preprocessing),
        schema=schema,
        data_hash=data_hash,
        metrics={
            "train_seconds": result["seconds"],
            "steps": run.steps,
            **{k: v for k, v in metrics.items() if k in SAVED_METRICS},
        },
    )
    return result
