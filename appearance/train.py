"""Training the appearance network on a dump's product regions (or fitting ImageNet features).

Category classification on two augmented views of each region plus a term pulling the two
views' centred features together (augmentation invariance), through the shared loop
(``foundation.training``: time budget, device, exact resume from ``appearance-last``); then the
BatchNorm statistics are re-estimated (``torch.optim.swa_utils.update_bn``) and the centring
median is fitted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from appearance.evaluate import bit_entropy, float_vs_binary
from appearance.instance import VIEW_CANVAS, InstanceNetwork, InstanceTask, PairViews, instance_recall, shopper_view
from appearance.model import IMAGENET_MEAN, IMAGENET_STD, AppearanceCoder, CodeNetwork
from appearance.ranking import CATEGORY_RANKING, INSTANCE_RANKING
from appearance.regions import held_out, load_regions
from foundation import modelfiles
from foundation.backbones import check_backbone, check_pretrained, default_backbone, default_pretrained, input_size
from foundation.cutout import garment_mask
from foundation.devices import parse_device
from foundation.schema import Schema, default_schema
from foundation.training import Checkpoint, RunOptions, TrainSettings, seed_everything, torch_threads, train_loop

logger = logging.getLogger(__name__)

LAST = "appearance-last"  # the resumable checkpoint, beside appearance.pt
OBJECTIVES = ("category", "instance")


@dataclass(frozen=True)
class AppearanceConfig(TrainSettings):
    """Settings of the appearance network (CPU-sized by default).

    ``backbone``/``pretrained`` "auto": ImageNet MobileNetV2 where its weights are installed, else
    GoogLeNet from scratch (the paper's taps). ``finetune`` False with ImageNet weights uses the
    features as they are (the paper's method: only the median is fitted); True trains them here.
    """

    backbone: str = "auto"
    pretrained: str = "auto"
    finetune: bool = True
    # "instance": a product's catalogue photo and synthetic shopper's views of it are pulled together
    # (InfoNCE on soft codes, ``appearance.instance``); "category": category classes + view invariance
    objective: str = "category"
    temperature: float = 0.1  # of the instance InfoNCE
    category_weight: float = 0.2  # of the category term beside the instance term
    frozen_stages: int = 0  # first backbone stages kept frozen when fine-tuning ImageNet weights
    image_size: int | None = 112  # None: the backbone's own (224 px; 260 for efficientnet_lite2)
    epochs: int = 6
    batch_size: int = 48
    lr: float = 5e-4  # 2e-3 stayed near chance: clothing val binary mAP 0.166 -> 0.437, synthetic 0.146 -> 0.549
    weight_decay: float = 1e-4
    warmup_share: float = 0.15  # of all steps, from lr / 25
    clip_grad_norm: float | None = None
    invariance_weight: float = 1.0
    max_products: int | None = None  # cap on the training regions (None: all)
    median_products: int = 4000  # regions used to estimate the per-dimension median
    val_share: float = 0.15  # held-out regions for the float vs binary retrieval figure
    max_minutes: float | None = 20.0  # stop after the step crossing this budget (None: no limit)
    resume_checkpoint: bool = True  # write appearance-last.pt after each epoch, so a run can resume

    TRAINS = "appearance"
    # how the trained network is calibrated may change on resume too
    RUN_SETTINGS = (*TrainSettings.RUN_SETTINGS, "median_products")
    PRESET_FIELDS = {
        # With ImageNet MobileNetV2 installed: its features as they are, only the median fitted
        # (seconds). Else GoogLeNet from scratch: 95 s on an idle 2-core CPU for the demo's 2,000
        # regions at 64 px, held-out category mAP 0.549 with the binary codes (0.146 with lr 2e-3,
        # the random-code level).
        "demo": dict(
            finetune=False,
            image_size=64,
            epochs=5,
            batch_size=48,
            max_products=2000,
            median_products=2000,
            val_share=0.1,
            max_minutes=4.0,
            resume_checkpoint=False,
        ),
        # ImageNet MobileNetV2 fine-tuned to find products (instance objective), three stages frozen
        # (GoogLeNet from scratch where the ImageNet file is not installed)
        "default": dict(
            objective="instance",
            image_size=None,
            epochs=3,
            batch_size=32,
            lr=2e-4,
            warmup_share=0.1,
            frozen_stages=3,
            val_share=0.1,
            max_minutes=17.0,
        ),
        # the paper's method on ImageNet MobileNetV2: its features as they are, the median fitted on
        # the catalogue
        "frozen": dict(finetune=False, image_size=None),
        # from scratch, the paper's GoogLeNet taps (measured: held-out clothing category mAP 0.437, 510 s)
        "scratch": dict(backbone="googlenet", pretrained="none"),
    }

    def __post_init__(self):
        if self.image_size is not None and self.image_size < 32:
            raise ValueError(f"appearance image_size must be at least 32 pixels, got {self.image_size}")
        for name in ("batch_size", "median_products"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"appearance {name} must be at least 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.val_share < 0.9:
            raise ValueError(f"appearance val_share must lie in [0, 0.9), got {self.val_share}")
        if self.backbone != "auto":
            check_backbone(self.backbone)
        if self.pretrained != "auto":
            check_pretrained(self.pretrained)
        if not self.finetune and self.pretrained == "none":
            raise ValueError("appearance: a network from scratch must be trained (finetune=True)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown appearance objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if not self.temperature > 0:
            raise ValueError(f"appearance temperature must be positive, got {self.temperature}")
        if self.frozen_stages and self.pretrained == "none":
            raise ValueError(
                f"frozen_stages={self.frozen_stages} needs ImageNet weights: a frozen random stage never learns"
            )
        super().__post_init__()

    def resolved(self) -> AppearanceConfig:
        """``auto`` backbone and pretrained, and an unset image size, made concrete by what is installed here."""
        if self.backbone == "auto":
            installed = default_pretrained(default_backbone()) == "imagenet"
            backbone = default_backbone() if installed and self.pretrained != "none" else "googlenet"
        else:
            backbone = self.backbone
        pretrained = default_pretrained(backbone) if self.pretrained == "auto" else self.pretrained
        finetune = self.finetune or pretrained == "none"
        frozen = self.frozen_stages if pretrained == "imagenet" else 0
        size = self.image_size or input_size(backbone)
        return replace(
            self, backbone=backbone, pretrained=pretrained, finetune=finetune, frozen_stages=frozen, image_size=size
        )


PRESETS = AppearanceConfig.presets()


AppearanceTrainConfig = AppearanceConfig  # the name the demo uses


def _loader(ds, config: AppearanceConfig) -> torch.utils.data.DataLoader:
    """Shuffled batches in a seeded order (so a resumed run replays it); a last short batch is dropped."""
    return torch.utils.data.DataLoader(
        ds,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(ds) > config.batch_size,
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),
    )


class _Views(torch.utils.data.Dataset):
    def __init__(self, images, labels, size: int):
        from torchvision.transforms import v2 as T

        self.images, self.labels = images, labels
        self.aug = T.Compose(
            [
                T.RandomResizedCrop(size, scale=(0.55, 1.0), ratio=(0.7, 1.4), antialias=True),
                T.RandomHorizontalFlip(),
                T.ColorJitter(brightness=0.2, contrast=0.2),  # no hue jitter: colour is part of the look
                T.ToImage(),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.images[i]
        return self.aug(im), self.aug(im), self.labels[i]


class AppearanceTask:
    """The appearance network as the training loop sees it: category loss plus view invariance."""

    def __init__(self, net: CodeNetwork, invariance_weight: float):
        self.model, self.invariance_weight = net, invariance_weight

    def parameters(self):
        return self.model.parameters()

    def loss(self, batch, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        a, b, label = (t.to(device, non_blocking=True) for t in batch)
        fa, fb = self.model(torch.cat([a, b])).float().chunk(2)
        logits = self.model.head(torch.cat([fa, fb])).float()
        ce = F.cross_entropy(logits, torch.cat([label, label]))
        # invariance on batch-centred features: the same centring the code uses
        mu = torch.cat([fa, fb]).mean(0, keepdim=True)
        inv = 1 - F.cosine_similarity(fa - mu, fb - mu, dim=1).mean()
        accuracy = float((logits[: len(label)].argmax(1) == label).float().mean())
        return ce + self.invariance_weight * inv, {"train_acc": accuracy}


def train_appearance(
    train_dump: str | Path,
    out_dir: str | Path,
    *,
    config: AppearanceConfig | str = "default",
    schema: Schema | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Train the appearance network from scratch on a dump's product regions; save ``appearance.pt``.

    ``config`` is a config or the name of one of ``PRESETS``. With ``resume`` a run continues from
    ``appearance-last.pt`` exactly where it stopped (refusing one made with other learning
    settings). Returns the metrics (training loss, float vs binary category mAP on held-out
    regions, bit entropy), which also go to the model manifest.
    """
    if isinstance(config, str):
        config = AppearanceConfig.preset(config)
    config = config.resolved()
    schema = schema or default_schema()
    t0 = time.perf_counter()
    with torch_threads(config.threads):
        if not config.finetune:
            return _imagenet_appearance(train_dump, out_dir, config, schema, progress)
        if config.objective == "instance":
            return _instance_appearance(train_dump, out_dir, config, schema, progress, resume)
        load_size = int(config.image_size * 1.15)
        images, cats, ids = load_regions(
            train_dump, size=load_size, limit=config.max_products, schema=schema, progress=progress
        )
        classes = sorted(set(cats))
        if len(classes) < 2:
            raise ValueError(f"the dump {train_dump} has regions of {len(classes)} category; training needs at least 2")
        y = np.array([classes.index(c) for c in cats])
        val = held_out(ids, config.val_share) if config.val_share > 0 else np.zeros(len(ids), bool)
        if val.all():
            val[:] = False
        tr = np.flatnonzero(~val)
        ds = _Views([images[i] for i in tr], torch.from_numpy(y[tr]), config.image_size)
        loader = _loader(ds, config)
        seed_everything(config.seed)  # the same initial weights for the same seed
        net = CodeNetwork(config.backbone, pretrained=config.pretrained, num_classes=len(classes))
        data_hash = modelfiles.file_hash(train_dump)
        prep = {"image_size": config.image_size, "resize": "squash", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        checkpoint = Checkpoint(
            Path(out_dir),
            LAST,
            {**config.learning_settings(), "classes": classes},
            prep,
            schema=schema,
            data_hash=data_hash,
        )
        options = RunOptions(checkpoint=checkpoint, resume=resume, progress=progress, desc="appearance")
        run = train_loop(AppearanceTask(net, config.invariance_weight), loader, config.loop_config(), options)
        coder = AppearanceCoder(net, image_size=config.image_size, device=run.device)
        calib = [images[i] for i in tr[: config.median_products]]
        # A short CPU run leaves BatchNorm's running statistics far from the trained network's (they
        # move 10% a step); in eval mode that shifts activations and kills most bits of the code.
        update_bn((coder.tensor(calib[i : i + 64]) for i in range(0, len(calib), 64)), net, device=coder.device)
        net.eval()
        med_idx = tr[: config.median_products]
        coder.fit_median([images[i] for i in med_idx])
        metrics: dict = {
            "train_regions": int(len(tr)),
            "categories": classes,
            "epochs": run.history,
            "epochs_planned": run.epochs_planned,
            "steps": run.steps,
            "stopped": run.stopped,
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        held = np.flatnonzero(val)
        if len(held) >= 10:
            metrics["val"] = float_vs_binary(coder, [images[i] for i in held], [cats[i] for i in held])
        train_codes = coder.encode([images[i] for i in med_idx])
        metrics["train_code"] = bit_entropy(train_codes)
        coder.ranking = CATEGORY_RANKING
        path = coder.save(out_dir, schema=schema, metrics=metrics, config=asdict(config), data_hash=data_hash)
        metrics["path"] = str(path)
        logger.info("saved %s (%.0fs, %s)", path, time.perf_counter() - t0, run.stopped)
        return metrics


def _imagenet_appearance(train_dump, out_dir, config: AppearanceConfig, schema: Schema, progress: bool) -> dict:
    """ImageNet features as they are (no training): fit the median on the catalogue's regions and save."""
    t0 = time.perf_counter()
    # a clear error before reading the dump
    coder = AppearanceCoder.imagenet(
        config.backbone, image_size=config.image_size, device=str(parse_device(config.device))
    )
    images, cats, ids = load_regions(
        train_dump, size=config.image_size, limit=config.max_products, schema=schema, progress=progress
    )
    val = held_out(ids, config.val_share) if config.val_share > 0 else np.zeros(len(ids), bool)
    tr, held = np.flatnonzero(~val), np.flatnonzero(val)
    coder.fit_median([images[i] for i in tr[: config.median_products]])
    metrics: dict = {
        "weights": f"imagenet {config.backbone}",
        "train_regions": int(len(tr)),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    if len(held) >= 10:
        metrics["val"] = float_vs_binary(coder, [images[i] for i in held], [cats[i] for i in held])
    coder.ranking = CATEGORY_RANKING
    path = coder.save(
        out_dir, schema=schema, metrics=metrics, config=asdict(config), data_hash=modelfiles.file_hash(train_dump)
    )
    metrics["path"] = str(path)
    return metrics


def _instance_appearance(
    train_dump, out_dir, config: AppearanceConfig, schema: Schema, progress: bool, resume: bool
) -> dict:
    """Instance training (``appearance.instance``): catalogue photo vs synthetic shopper's views."""
    t0 = time.perf_counter()
    images, cats, ids = load_regions(
        train_dump, size=VIEW_CANVAS, limit=config.max_products, schema=schema, progress=progress
    )
    classes = sorted(set(cats))
    y = torch.tensor([classes.index(c) for c in cats])
    masks = [garment_mask(im) for im in tqdm(images, desc="cut-outs", unit="img", disable=not progress)]
    val = held_out(ids, config.val_share) if config.val_share > 0 else np.zeros(len(ids), bool)
    if val.all():
        val[:] = False
    tr, held = np.flatnonzero(~val), np.flatnonzero(val)
    seed_everything(config.seed)  # the same initial weights for the same seed
    net = CodeNetwork(config.backbone, pretrained=config.pretrained)
    coder = AppearanceCoder(net, image_size=config.image_size, device=str(parse_device(config.device)))
    # the held-out products' shopper views, drawn once: the same queries before and after training
    rng = np.random.default_rng([config.seed, 17])
    held_shop = [images[i] for i in held]
    held_street = [
        shopper_view(images[i], masks[i], rng, backdrop=images[held[(n + 1) % len(held)]]) for n, i in enumerate(held)
    ]
    before = None
    if len(held) >= 10:
        coder.fit_median([images[i] for i in tr[: config.median_products]])
        before = instance_recall(coder, held_shop, held_street)
        logger.info("held-out shopper views before training: %s", before)
    ds = PairViews([images[i] for i in tr], [masks[i] for i in tr], y[tr], coder.preprocess)
    loader = _loader(ds, config)
    task = InstanceTask(
        InstanceNetwork(net, frozen_stages=config.frozen_stages),
        torch.nn.Linear(net.dims, len(classes)),
        temperature=config.temperature,
        category_weight=config.category_weight,
    )
    data_hash = modelfiles.file_hash(train_dump)
    checkpoint = Checkpoint(
        Path(out_dir),
        LAST,
        {**config.learning_settings(), "classes": classes},
        {**coder.preprocess.to_dict(), "transform_input": bool(net.transform_input)},
        schema=schema,
        data_hash=data_hash,
    )
    options = RunOptions(checkpoint=checkpoint, resume=resume, progress=progress, desc="appearance")
    run = train_loop(task, loader, config.loop_config(), options)
    net.eval()
    coder.fit_median([images[i] for i in tr[: config.median_products]])
    metrics: dict = {
        "objective": "instance",
        "weights": f"{config.pretrained} {config.backbone}",
        "train_regions": int(len(tr)),
        "epochs": run.history,
        "epochs_planned": run.epochs_planned,
        "steps": run.steps,
        "stopped": run.stopped,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    if before is not None:
        metrics["held_out_shopper_views"] = {"before": before, "after": instance_recall(coder, held_shop, held_street)}
        metrics["val"] = float_vs_binary(coder, held_shop, [cats[i] for i in held])
        logger.info("held-out shopper views after training: %s", metrics["held_out_shopper_views"]["after"])
    metrics["train_code"] = bit_entropy(coder.encode([images[i] for i in tr[: config.median_products]]))
    coder.ranking = INSTANCE_RANKING
    path = coder.save(out_dir, schema=schema, metrics=metrics, config=asdict(config), data_hash=data_hash)
    metrics["path"] = str(path)
    logger.info("saved %s (%.0fs, %s)", path, time.perf_counter() - t0, run.stopped)
    return metrics
