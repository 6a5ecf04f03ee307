"""Training examples from a product dump: the product's image and its target token sequence.

The target is ``schema.encode`` of the product's attributes completed with its category and
great-category; the category comes from the product's attributes, else from its seller text
(``category_from_text(category_path, title)``); a product with neither is skipped and counted.

Images are decoded once and kept in memory at a little over the model's input size (uint8), so
an epoch costs no JPEG decoding; augmentation works on those tensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from foundation.dump import read_dump
from foundation.images import ImageError, load_image
from foundation.modelfiles import Preprocess
from foundation.schema import Schema, default_schema
from foundation.text import category_from_text

logger = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CACHE_SCALE = 1.15  # images are cached a little larger than the input so crops can move


def product_category(product, schema: Schema) -> str | None:
    """The product's category: its attributes', else the one its seller text names."""
    cat = product.attributes.get(schema.CATEGORY)
    if cat:
        return cat
    return category_from_text(product.category_path, product.title, schema=schema)


def target_tokens(product, schema: Schema) -> list[int] | None:
    """BOS, the product's attribute tokens in schema order, EOS; None when no category is known."""
    cat = product_category(product, schema)
    if cat is None:
        return None
    return schema.encode(schema.complete(product.attributes, cat))


def preprocessing(image_size: int) -> dict:
    """What the model expects of an image; saved with its weights."""
    return {"image_size": int(image_size), "resize": "squash", "mean": list(MEAN), "std": list(STD)}


def to_input(images: list[Image.Image], prep: dict) -> torch.Tensor:
    """Normalised model input (N, 3, S, S) from RGB images (each squashed to S x S)."""
    return Preprocess.from_saved(prep).batch(images)


@dataclass
class Examples:
    """Decoded images (N, 3, C, C) uint8, their token sequences, and the products' ids."""

    images: torch.Tensor
    tokens: list[list[int]]
    ids: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: list[Examples]) -> Examples:
        """Several dumps' examples trained on together (catalogue photos and street crops, say)."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            torch.cat([p.images for p in parts]),
            [t for p in parts for t in p.tokens],
            [i for p in parts for i in p.ids],
            sum(p.skipped for p in parts),
        )


def load_examples(
    dump: str | Path,
    image_size: int,
    *,
    schema: Schema | None = None,
    progress: bool = True,
    limit: int | None = None,
    crops: bool = False,
) -> Examples:
    """Every usable product of ``dump`` (``limit``: that many, evenly spread), images decoded at
    ``CACHE_SCALE * image_size``.

    With ``crops``, a product whose dump row boxes its own garment (one box of its category,
    covering at most 60 % of the photo) also gives a second example: that box with a margin,
    id ``"<id>#box"``. The model then reads a garment alone as well as in its scene.
    """
    schema = schema or default_schema()
    side = int(round(image_size * CACHE_SCALE))
    products = list(read_dump(dump, schema=schema, check_images=False))
    if limit is not None and len(products) > limit:  # evenly spread, so every part of the dump is seen
        step = len(products) / limit
        products = [products[int(i * step)] for i in range(limit)]
    images, tokens, ids, skipped = [], [], [], 0
    for p in tqdm(products, desc=f"reading {Path(dump).name}", unit="img", disable=not progress):
        seq = target_tokens(p, schema)
        if seq is None:
            logger.warning("product %s: no category in its attributes or text; skipped", p.id)
            skipped += 1
            continue
        try:
            im = _load_small(p.photos[0].path, side)
        except ImageError as exc:
            logger.warning("product %s: %s; skipped", p.id, exc)
            skipped += 1
            continue
        images.append(np.asarray(im.resize((side, side), Image.BILINEAR)))
        tokens.append(seq)
        ids.append(p.id)
        crop = _garment_crop(p, product_category(p, schema)) if crops else None
        if crop is not None:  # the garment alone too: what a shopper's rectangle shows the model
            images.append(np.asarray(crop.resize((side, side), Image.BILINEAR)))
            tokens.append(seq)
            ids.append(f"{p.id}#box")
    if not ids:
        raise ValueError(f"{dump}: no product has both a usable image and a category")
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return Examples(tensor, tokens, ids, skipped)


def _garment_crop(product, category: str | None, margin: float = 0.1) -> Image.Image | None:
    """The product's own garment, cut from its photo with a margin; None without one clear box."""
    own = [b for b in product.boxes if b.category == category]
    if len(own) != 1:
        return None
    try:
        im = load_image(product.photos[0].path)
    except ImageError:
        return None  # the whole-photo example already reported an unreadable image
    b, (w, h) = own[0], im.size
    if (b.x1 - b.x0) * (b.y1 - b.y0) > 0.6 * w * h:  # nearly the whole photo already
        return None
    mx, my = margin * (b.x1 - b.x0), margin * (b.y1 - b.y0)
    box = (max(0, int(b.x0 - mx)), max(0, int(b.y0 - my)), min(w, int(b.x1 + mx) + 1), min(h, int(b.y1 + my) + 1))
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return None
    return im.crop(box)


def _load_small(path: Path, side: int) -> Image.Image:
    """The image as RGB, JPEG-decoded at the smallest scale still at least ``side`` pixels (much faster)."""
    try:
        im = Image.open(path)
        im.draft("RGB", (side, side))
        im = ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read the image {path}: {exc}") from None
    if min(im.size) < 8:
        raise ImageError(f"the image {path} is too small ({im.size[0]}x{im.size[1]} pixels)")
    return im


def augmentation(image_size: int) -> v2.Transform:
    """Crops, flips and light photometric changes; hue is left alone because colour is a label."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(0.55, 1.0), ratio=(0.8, 1.25), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1),
        ]
    )


class SequenceDataset(Dataset):
    """(image (3, S, S) float normalised, tokens (T,) long) pairs, augmented when training."""

    def __init__(self, examples: Examples, image_size: int, *, train: bool):
        self.examples = examples
        self.size = image_size
        self.aug = augmentation(image_size) if train else v2.Resize((image_size, image_size), antialias=True)
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        img = self.aug(self.examples.images[i]).float().div_(255)
        return (img - self.mean) / self.std, torch.tensor(self.examples.tokens[i], dtype=torch.long)


def collate(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked images and PAD-padded token sequences (B, T)."""
    images = torch.stack([b[0] for b in batch])
    tokens = torch.nn.utils.rnn.pad_sequence([b[1] for b in batch], batch_first=True, padding_value=0)
    return images, tokens


def group_targets(tokens: torch.Tensor, schema: Schema) -> torch.Tensor:
    """(B, G) per-group class ids for the baseline: the value's index, or len(values) when absent."""
    len(schema.groups)
    out = torch.tensor([len(g.values) for g in schema.groups]).repeat(tokens.shape[0], 1)
    offsets = [schema.token_id(schema.token(g.name, g.values[0])) for g in schema.groups]
    for gi, (g, off) in enumerate(zip(schema.groups, offsets)):
        in_group = (tokens >= off) & (tokens < off + len(g.values))
        has = in_group.any(dim=1)
        val = torch.where(in_group, tokens - off, torch.zeros_like(tokens)).sum(dim=1)
        out[:, gi] = torch.where(has, val, out[:, gi])
    return out
