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

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from tqdm import tqdm

from attributes import modeldir
from attributes.schema import Schema, default_schema
from attributes.text import category_from_text

logger = logging.getLogger(__name__)

NAME = "appearance"
FEATURE_DIMS = (832, 1024)  # inception4e, inception5b
DIMS = sum(FEATURE_DIMS)
CODE_BYTES = (DIMS + 7) // 8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AppearanceConfig:
    """Training settings of the appearance network (CPU-sized by default)."""

    image_size: int = 112
    epochs: int = 6
    batch_size: int = 48
    lr: float = 5e-4  # 2e-3 stayed near chance: clothing val binary mAP 0.166 -> 0.437, synthetic 0.146 -> 0.549
    weight_decay: float = 1e-4
    invariance_weight: float = 1.0
    max_products: int | None = None  # cap on the training regions (None: all)
    median_products: int = 4000  # regions used to estimate the per-dimension median
    val_share: float = 0.15  # held-out regions for the float vs binary retrieval figure
    seed: int = 0
    threads: int = 2
    weights: str | None = None  # "imagenet": torchvision's ImageNet GoogLeNet, only the median is fitted

    def __post_init__(self):
        if self.image_size < 32:
            raise ValueError(f"appearance image_size must be at least 32 pixels, got {self.image_size}")
        for name in ("epochs", "batch_size", "median_products", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"appearance {name} must be at least 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.val_share < 0.9:
            raise ValueError(f"appearance val_share must lie in [0, 0.9), got {self.val_share}")
        if self.weights not in (None, "imagenet"):
            raise ValueError(f"appearance weights must be None or 'imagenet', got {self.weights!r}")

    @classmethod
    def demo(cls) -> "AppearanceConfig":
        """The demo's preset: a few minutes on a 2-core CPU."""
        return PRESETS["demo"]


PRESETS = {
    # 95 s on an idle 2-core CPU for the demo's 2,000 regions at 64 px: held-out category mAP
    # 0.549 with the binary codes (0.146 with lr 2e-3, the random-code level)
    "demo": AppearanceConfig(image_size=64, epochs=5, batch_size=48, max_products=2000, median_products=2000,
                             val_share=0.1),
    "default": AppearanceConfig(),
}


AppearanceTrainConfig = AppearanceConfig  # the name the demo uses


class GoogLeNetFeatures(nn.Module):
    """GoogLeNet up to ``inception5b``; returns the pooled 4e and 5b activations, concatenated.

    Args:
        num_classes: categories of the training head (0: no head, for ImageNet features).
        weights: ``None`` (from scratch) or a torchvision ``GoogLeNet_Weights`` value.
    """

    def __init__(self, *, num_classes: int = 0, weights=None, transform_input: bool = False):
        super().__init__()
        if weights is None:
            self.net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                                    transform_input=transform_input)
        else:
            self.net = torchvision.models.googlenet(weights=weights, aux_logits=False)
        self.net.fc = nn.Identity()  # the ImageNet classifier is not part of the code
        self.head = nn.Linear(DIMS, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, 3, H, W) normalised images -> (N, 1856) pooled activations (>= 0)."""
        n = self.net
        x = n._transform_input(x)
        x = n.maxpool1(n.conv1(x))
        x = n.maxpool2(n.conv3(n.conv2(x)))
        x = n.maxpool3(n.inception3b(n.inception3a(x)))
        x = n.inception4e(n.inception4d(n.inception4c(n.inception4b(n.inception4a(x)))))
        f4 = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = n.inception5b(n.inception5a(n.maxpool4(x)))
        f5 = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.cat([f4, f5], 1)


def imagenet_weights():
    """torchvision's ImageNet GoogLeNet weights, or a clear error when they cannot be had here."""
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    try:
        weights.get_state_dict(progress=False, check_hash=True)  # from torch's cache, or downloaded once
    except Exception as exc:  # no network, no cache: urllib raises several types
        raise modeldir.ModelError(
            f"ImageNet GoogLeNet weights are not available ({exc.__class__.__name__}: {exc}); put "
            f"{weights.url.rsplit('/', 1)[-1]} in {torch.hub.get_dir()}/checkpoints or train the network "
            "here with `fashion-search train appearance`"
        ) from None
    return weights


def bit_entropy(codes: np.ndarray) -> dict:
    """Mean and minimum per-bit entropy (bits) and the share of set bits of packed codes."""
    bits = np.unpackbits(np.asarray(codes, np.uint8), axis=1)[:, :DIMS].astype(np.float64)
    p = bits.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0))
    return {"mean_entropy": float(h.mean()), "min_entropy": float(h.min()), "ones_share": float(p.mean()),
            "dead_bits": int((h < 0.1).sum())}


class AppearanceCoder:
    """A GoogLeNet feature extractor with its preprocessing and centring median: images -> codes."""

    def __init__(self, net: GoogLeNetFeatures, *, image_size: int, median: np.ndarray | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.image_size = int(image_size)
        self.median = None if median is None else np.asarray(median, np.float32).reshape(DIMS)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.device = device

    code_bytes = CODE_BYTES

    @classmethod
    def load(cls, models_dir: str | Path, *, device: str = "cpu", schema: Schema | None = None) -> "AppearanceCoder":
        ckpt = modeldir.load_model(models_dir, NAME, schema=schema)
        pre = ckpt["preprocessing"]
        net = GoogLeNetFeatures(num_classes=0, weights=None, transform_input=bool(pre.get("transform_input", False)))
        state = {k: v for k, v in ckpt["state_dicts"]["features"].items() if not k.startswith("head.")}
        net.load_state_dict(state, strict=True)
        median = ckpt["state_dicts"]["median"]["median"].numpy()
        return cls(net, image_size=pre["image_size"], median=median, mean=pre["mean"], std=pre["std"], device=device)

    @classmethod
    def imagenet(cls, *, image_size: int = 224, device: str = "cpu") -> "AppearanceCoder":
        """ImageNet features; set ``median`` with :meth:`fit_median` on the catalogue before coding."""
        return cls(GoogLeNetFeatures(weights=imagenet_weights()), image_size=image_size, device=device)

    def save(self, models_dir: str | Path, *, schema: Schema | None = None, metrics: dict | None = None,
             config: dict | None = None, data_hash: str | None = None) -> Path:
        if self.median is None:
            raise ValueError("fit the median on the catalogue before saving the appearance coder")
        state = {k: v for k, v in self.net.state_dict().items() if not k.startswith("head.")}
        return modeldir.save_model(
            models_dir, NAME,
            state_dicts={"features": state, "median": {"median": torch.from_numpy(self.median.copy())}},
            config=config or {}, schema=schema, metrics=metrics, data_hash=data_hash,
            preprocessing={"image_size": self.image_size, "mean": list(map(float, self.mean.flatten())),
                           "std": list(map(float, self.std.flatten())), "resize": "squash",
                           "transform_input": bool(self.net.net.transform_input)},
            extra={"dims": DIMS, "code_bytes": CODE_BYTES, "layers": ["inception4e", "inception5b"]},
        )

    def tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        s = self.image_size
        arr = np.stack([np.asarray(im.convert("RGB").resize((s, s), Image.Resampling.BILINEAR), np.uint8) for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def features(self, images: Sequence[Image.Image], *, batch_size: int = 64) -> np.ndarray:
        """(N, 1856) float32 pooled activations of RGB region images."""
        if not len(images):
            return np.zeros((0, DIMS), np.float32)
        out = []
        for i in range(0, len(images), batch_size):
            x = self.tensor(images[i:i + batch_size]).to(self.device)
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


# -- training ---------------------------------------------------------------------------------

def product_region(product, schema: Schema) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """The product's box and category from a dump row: its labelled category, else the seller's text."""
    category = product.attributes.get("category") or category_from_text(product.category_path, product.title, schema=schema)
    for b in product.boxes:
        if b.category == category:
            return (b.x0, b.y0, b.x1, b.y1), category
    return None, category


def load_regions(dump: str | Path, *, size: int, limit: int | None = None, schema: Schema | None = None,
                 progress: bool = True) -> tuple[list[Image.Image], list[str], list[str]]:
    """The product regions of a dump, shrunk to ``size`` pixels: (images, categories, ids)."""
    from indexer.dump import DumpReport, read_dump
    from indexer.images import ImageError, load_image

    schema = schema or default_schema()
    images, cats, ids = [], [], []
    report = DumpReport()
    for p in tqdm(read_dump(dump, schema=schema, report=report, check_images=False), desc="regions", unit="img",
                  disable=not progress):
        box, category = product_region(p, schema)
        if category is None:
            continue
        try:
            im = load_image(p.image)
        except ImageError as exc:
            logger.warning("skipping %s: %s", p.id, exc)
            continue
        if box is not None:
            im = im.crop(tuple(int(round(v)) for v in box))
        im.thumbnail((size, size), Image.Resampling.BILINEAR)
        images.append(im)
        cats.append(category)
        ids.append(p.id)
        if limit and len(images) >= limit:
            break
    if not images:
        raise ValueError(f"no usable product regions in {dump} (need images and a category from text or attributes)")
    return images, cats, ids


def _split(ids: list[str], share: float) -> np.ndarray:
    """A fixed validation mask by a hash of each id."""
    return np.array([hashlib.sha1(i.encode()).digest()[0] < 256 * share for i in ids], bool)


class _Views(torch.utils.data.Dataset):
    def __init__(self, images, labels, size: int):
        from torchvision.transforms import v2 as T

        self.images, self.labels = images, labels
        self.aug = T.Compose([
            T.RandomResizedCrop(size, scale=(0.55, 1.0), ratio=(0.7, 1.4), antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2),  # no hue jitter: colour is part of the look
            T.ToImage(), T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.images[i]
        return self.aug(im), self.aug(im), self.labels[i]


def retrieval_map(scores: np.ndarray, labels: np.ndarray, *, top_k: int | None = None) -> float:
    """Mean average precision of each row's ranking (``scores``: (Q, N), higher is closer).

    Row ``q`` is a query against all items; item ``q`` itself is excluded. Relevant: same label.
    """
    from torchmetrics.retrieval import RetrievalMAP

    q = scores.shape[0]
    mask = ~np.eye(q, scores.shape[1], dtype=bool)
    flat = scores[mask].astype(np.float64)
    # torchmetrics ranks negative scores wrongly (all zero AP): shift into (0, inf), order unchanged
    preds = torch.from_numpy(flat - flat.min() + 1.0)
    target = torch.from_numpy((labels[:, None] == labels[None, :])[mask])
    indexes = torch.from_numpy(np.repeat(np.arange(q), mask.sum(1)))
    return float(RetrievalMAP(top_k=top_k)(preds, target, indexes=indexes))


def float_vs_binary(coder: AppearanceCoder, images: Sequence[Image.Image], labels: Sequence[str], *,
                    top_k: int | None = None) -> dict:
    """Category mAP of the same queries ranked by float features (L2) and by binary codes (Hamming)."""
    feats = coder.features(images)
    codes = coder.binarize(feats)
    lab = np.asarray(labels)
    sq = (feats ** 2).sum(1)
    l2 = sq[:, None] + sq[None, :] - 2 * feats @ feats.T
    centred = feats - coder.median
    cn = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    bits = np.unpackbits(codes, axis=1)[:, :DIMS].astype(np.float32)
    hamming = bits @ (1 - bits).T + (1 - bits) @ bits.T
    return {
        "queries": int(len(lab)),
        "map_float_l2": retrieval_map(-l2, lab, top_k=top_k),
        "map_float_centred_cosine": retrieval_map(cn @ cn.T, lab, top_k=top_k),
        "map_binary_hamming": retrieval_map(-hamming, lab, top_k=top_k),
        **{f"code_{k}": v for k, v in bit_entropy(codes).items()},
    }


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, batches) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over ``batches`` (precise BN).

    A short CPU training run leaves the running statistics far from the trained network's (they
    move 10% a step); in eval mode that shifts activations and kills most bits of the code.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = net.training
    net.train()
    for x in batches:
        net(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.train(was_training)


def train_appearance(train_dump: str | Path, out_dir: str | Path, *, config: AppearanceConfig | str = "default",
                     schema: Schema | None = None, progress: bool = True) -> dict:
    """Train the appearance network from scratch on a dump's product regions; save ``appearance.pt``.

    Returns the metrics (training loss, float vs binary category mAP on held-out regions, bit
    entropy), which also go to the model manifest.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown appearance preset {config!r}; choose from {sorted(PRESETS)}")
        config = PRESETS[config]
    schema = schema or default_schema()
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(config.threads, threads))
    t0 = time.perf_counter()
    try:
        if config.weights == "imagenet":
            return _imagenet_appearance(train_dump, out_dir, config, schema, progress, t0)
        load_size = int(config.image_size * 1.15)
        images, cats, ids = load_regions(train_dump, size=load_size, limit=config.max_products, schema=schema,
                                         progress=progress)
        classes = sorted(set(cats))
        if len(classes) < 2:
            raise ValueError(f"the dump {train_dump} has regions of {len(classes)} category; training needs at least 2")
        y = np.array([classes.index(c) for c in cats])
        val = _split(ids, config.val_share) if config.val_share > 0 else np.zeros(len(ids), bool)
        if val.all():
            val[:] = False
        tr = np.flatnonzero(~val)
        ds = _Views([images[i] for i in tr], torch.from_numpy(y[tr]), config.image_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=config.batch_size, shuffle=True, drop_last=len(tr) > config.batch_size,
                                             generator=torch.Generator().manual_seed(config.seed))
        net = GoogLeNetFeatures(num_classes=len(classes))
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps = config.epochs * len(loader)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.15)
        net.train()
        history = []
        bar = tqdm(total=steps, desc="train appearance", unit="batch", disable=not progress)
        for epoch in range(config.epochs):
            tot = correct = seen = 0.0
            for a, b, label in loader:
                fa, fb = net(torch.cat([a, b])).chunk(2)
                logits = net.head(torch.cat([fa, fb]))
                ce = F.cross_entropy(logits, torch.cat([label, label]))
                # invariance on batch-centred features: the same centring the code uses
                mu = torch.cat([fa, fb]).mean(0, keepdim=True)
                inv = 1 - F.cosine_similarity(fa - mu, fb - mu, dim=1).mean()
                loss = ce + config.invariance_weight * inv
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += loss.item() * len(label)
                correct += float((logits[: len(label)].argmax(1) == label).sum())
                seen += len(label)
                bar.update(1)
                bar.set_postfix(loss=f"{tot / seen:.3f}", acc=f"{correct / seen:.2f}")
            history.append({"epoch": epoch + 1, "loss": tot / max(seen, 1), "train_acc": correct / max(seen, 1)})
            logger.info("appearance epoch %d: loss %.3f, train accuracy %.3f", epoch + 1, history[-1]["loss"],
                        history[-1]["train_acc"])
        bar.close()
        coder = AppearanceCoder(net, image_size=config.image_size)
        calib = [images[i] for i in tr[: config.median_products]]
        recalibrate_batchnorm(net, (coder.tensor(calib[i:i + 64]) for i in range(0, len(calib), 64)))
        net.eval()
        med_idx = tr[: config.median_products]
        coder.fit_median([images[i] for i in med_idx])
        metrics: dict = {"train_regions": int(len(tr)), "categories": classes, "epochs": history,
                         "train_seconds": round(time.perf_counter() - t0, 1)}
        held = np.flatnonzero(val)
        if len(held) >= 10:
            metrics["val"] = float_vs_binary(coder, [images[i] for i in held], [cats[i] for i in held])
        train_codes = coder.encode([images[i] for i in med_idx])
        metrics["train_code"] = bit_entropy(train_codes)
        path = coder.save(out_dir, schema=schema, metrics=metrics, config=asdict(config),
                          data_hash=modeldir.file_hash(train_dump))
        metrics["path"] = str(path)
        logger.info("saved %s (%.0fs)", path, time.perf_counter() - t0)
        return metrics
    finally:
        torch.set_num_threads(threads)


def _imagenet_appearance(train_dump, out_dir, config: AppearanceConfig, schema: Schema, progress: bool, t0: float) -> dict:
    """ImageNet GoogLeNet features (no training): fit the median on the catalogue's regions and save."""
    coder = AppearanceCoder.imagenet(image_size=config.image_size)  # a clear error before reading the dump
    images, cats, ids = load_regions(train_dump, size=config.image_size, limit=config.max_products, schema=schema,
                                     progress=progress)
    val = _split(ids, config.val_share) if config.val_share > 0 else np.zeros(len(ids), bool)
    tr, held = np.flatnonzero(~val), np.flatnonzero(val)
    coder.fit_median([images[i] for i in tr[: config.median_products]])
    metrics: dict = {"weights": "imagenet", "train_regions": int(len(tr)),
                     "train_seconds": round(time.perf_counter() - t0, 1)}
    if len(held) >= 10:
        metrics["val"] = float_vs_binary(coder, [images[i] for i in held], [cats[i] for i in held])
    path = coder.save(out_dir, schema=schema, metrics=metrics, config=asdict(config), data_hash=modeldir.file_hash(train_dump))
    metrics["path"] = str(path)
    return metrics


def untrained_coder(*, image_size: int = 64, seed: int = 0, calibration: Sequence[Image.Image] = ()) -> AppearanceCoder:
    """A randomly initialised coder (for tests and smoke runs), its median fitted on ``calibration``."""
    torch.manual_seed(seed)
    coder = AppearanceCoder(GoogLeNetFeatures(), image_size=image_size)
    if calibration:
        coder.fit_median(list(calibration))
    else:
        coder.median = np.zeros(DIMS, np.float32)
    return coder


__all__ = ["AppearanceCoder", "AppearanceConfig", "AppearanceTrainConfig", "GoogLeNetFeatures", "PRESETS", "CODE_BYTES", "DIMS",
           "bit_entropy", "float_vs_binary", "imagenet_weights", "load_regions", "product_region",
           "retrieval_map", "train_appearance", "untrained_coder"]
