"""Detection training data: a dump's images and ``boxes`` as torchvision detection targets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.transforms.functional import pil_to_tensor

from foundation.dump import Product, dumps_of, read_dump
from foundation.images import ImageError, load_image
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)


def products_with_boxes(
    dump: str | Path | Sequence[str | Path], *, schema: Schema | None = None, keep_empty: bool = False
) -> list[Product]:
    """The products that carry boxes (all of them with ``keep_empty``: negatives), of one dump or several in turn."""
    schema = schema or default_schema()
    kept = []
    for path in dumps_of(dump):
        products = [p for p in read_dump(path, schema=schema) if p.boxes or keep_empty]
        if not products:
            raise ValueError(f"{path} holds no product with boxes: the detector needs [x0, y0, x1, y1, category] boxes")
        kept += products
    return kept


class DetectionDataset(torch.utils.data.Dataset):
    """``(image [3, H, W] float in [0, 1], {"boxes": [N, 4] float, "labels": [N] int64})``.

    Images are shrunk on load so the longer side is at most ``max_side`` (the model resizes
    again; this only saves decoding work). ``flip`` mirrors half the samples at random, drawing
    from torch's RNG (seeded per loader worker, saved in training checkpoints).
    """

    def __init__(self, products: list[Product], classes: tuple[str, ...], *, max_side: int, flip: bool = False):
        self.products = products
        self.index = {c: i for i, c in enumerate(classes)}
        self.max_side = max_side
        self.flip = flip

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, i: int):
        p = self.products[i]
        try:
            image = load_image(p.photos[0].path)
        except ImageError as exc:
            logger.warning("product %s: %s; using a blank image with no boxes", p.id, exc)
            return torch.zeros(3, 64, 64), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        scale = min(1.0, self.max_side / max(image.size))
        if scale < 1.0:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        boxes = torch.tensor([[b.x0, b.y0, b.x1, b.y1] for b in p.boxes], dtype=torch.float32).reshape(-1, 4) * scale
        labels = torch.tensor([self.index[b.category] for b in p.boxes], dtype=torch.int64)
        tensor = pil_to_tensor(image).float().div_(255)
        if self.flip and float(torch.rand(())) < 0.5:
            tensor = tensor.flip(-1)
            boxes = torch.stack([image.width - boxes[:, 2], boxes[:, 1], image.width - boxes[:, 0], boxes[:, 3]], 1)
        return tensor, {"boxes": boxes, "labels": labels}


def collate(batch):
    return tuple(zip(*batch))
