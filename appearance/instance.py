"""Instance training of the appearance code: the same product, seen by the shop and by a shopper.

Every training product gives two views per step: its catalogue photo as the indexer sees it (the
product's region, loosely re-framed) and a synthetic shopper's photo of it (``shopper_view``): the
garment cut out (``foundation.cutout.garment_mask``), cropped, rotated, put in perspective,
re-lit (brightness, contrast, saturation, white balance), pasted at a random scale onto a
background (a gradient or a piece of another product's photo), sometimes partly covered by
another garment, framed by a loose rectangle, then blurred, shrunk and JPEG-compressed.

A symmetric InfoNCE loss over the batch makes the two views of one product each other's nearest
among all the batch's views of other products. It is taken on *soft codes*: each feature
standardised over the batch and squashed by ``tanh``, the relaxation of the code that thresholds
each feature at its catalogue median, so what is learnt survives binarization (the features are
pushed away from the threshold). A category head keeps the category term where labels exist.
Batch norm keeps its ImageNet statistics (CPU batches are small), and the first stages stay frozen.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageEnhance, ImageFilter
from torch import nn

from appearance.model import CodeNetwork
from foundation.backbones import frozen_modules

logger = logging.getLogger(__name__)

VIEW_CANVAS = 320  # side of the shopper's photo the garment is pasted into, before its rectangle is cut


# -- the shopper's view ---------------------------------------------------------------------------
def _gradient(size: int, rng: np.random.Generator) -> Image.Image:
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)
    t = t[:, None, None] if rng.random() < 0.5 else t[None, :, None]
    bg = a * (1 - t) + b * t + rng.normal(0, rng.uniform(1, 15), (size, size, 3))
    return Image.fromarray(np.clip(np.broadcast_to(bg, (size, size, 3)), 0, 255).astype(np.uint8))


def _backdrop(size: int, rng: np.random.Generator, photo: Image.Image | None) -> Image.Image:
    """A gradient, or a random piece of another photo blown up to the canvas (a real texture)."""
    if photo is None or rng.random() < 0.5:
        return _gradient(size, rng)
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.3, 0.8))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    piece = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR)
    return piece.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))


def _relight(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhance, lo, hi in (
        (ImageEnhance.Brightness, 0.7, 1.3),
        (ImageEnhance.Contrast, 0.7, 1.3),
        (ImageEnhance.Color, 0.7, 1.3),
    ):
        image = enhance(image).enhance(float(rng.uniform(lo, hi)))
    gains = rng.uniform(0.9, 1.1, 3)  # white balance of another camera
    arr = np.asarray(image, np.float32) * gains
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _cut(image: Image.Image, mask: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """The garment's pixels (crop, rotation, perspective) and their alpha, trimmed to the garment."""
    w, h = image.size
    kw, kh = rng.uniform(0.75, 1.0, 2)
    x0, y0 = int(rng.uniform(0, 1 - kw) * w), int(rng.uniform(0, 1 - kh) * h)
    box = (x0, y0, x0 + max(8, int(kw * w)), y0 + max(8, int(kh * h)))
    piece = image.crop(box)
    alpha = Image.fromarray(mask.astype(np.uint8) * 255).crop(box)
    angle = float(rng.uniform(-12, 12))
    piece = piece.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    alpha = alpha.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
    if rng.random() < 0.5:  # seen at a slant: each corner pulled inwards by up to ``d`` of the half-size
        pw, ph = piece.size
        d = rng.uniform(0.1, 0.3) * np.array([pw, ph]) / 2
        start = [[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]]
        pull = rng.uniform(0, 1, (4, 2)) * d * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        end = [[int(x + dx), int(y + dy)] for (x, y), (dx, dy) in zip(start, pull)]
        piece = TF.perspective(piece, start, end)
        alpha = TF.perspective(alpha, start, end, interpolation=TF.InterpolationMode.NEAREST)
    bbox = alpha.getbbox() or (0, 0, piece.width, piece.height)
    return piece.crop(bbox), alpha.crop(bbox)


def shopper_view(
    image: Image.Image,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    backdrop: Image.Image | None = None,
    occluder: tuple[Image.Image, np.ndarray] | None = None,
    canvas: int = VIEW_CANVAS,
) -> Image.Image:
    """A synthetic shopper's photo of the garment in ``image`` (``mask``: its bool [H, W] pixels),
    framed as a shopper's rectangle would frame it.

    Args:
        backdrop: a photo whose random piece may be the background (else a gradient).
        occluder: another garment ``(image, mask)`` that may cover part of this one.
    """
    piece, alpha = _cut(image.convert("RGB"), mask, rng)
    piece = _relight(piece, rng)
    scene = _backdrop(canvas, rng, backdrop)
    scale = canvas * rng.uniform(0.45, 0.9) / max(piece.size)
    size = (max(8, int(piece.width * scale)), max(8, int(piece.height * scale)))
    piece = piece.resize(size, Image.Resampling.BILINEAR)
    alpha = alpha.resize(size, Image.Resampling.NEAREST)
    ox, oy = int(rng.integers(0, canvas - size[0] + 1)), int(rng.integers(0, canvas - size[1] + 1))
    scene.paste(piece, (ox, oy), alpha)
    x0, y0, x1, y1 = ox, oy, ox + size[0], oy + size[1]
    if occluder is not None and rng.random() < 0.3:
        other, other_alpha = _cut(occluder[0].convert("RGB"), occluder[1], rng)
        side = max(8, int(max(size) * rng.uniform(0.3, 0.6)))
        s = side / max(other.size)
        osize = (max(4, int(other.width * s)), max(4, int(other.height * s)))
        # centred on a point of one of the target's edges: it covers an edge, never the whole garment
        edge = int(rng.integers(4))
        along_x, along_y = int(rng.integers(x0, x1)), int(rng.integers(y0, y1))
        cx, cy = ((x0, along_y), (x1, along_y), (along_x, y0), (along_x, y1))[edge]
        scene.paste(
            other.resize(osize, Image.Resampling.BILINEAR),
            (cx - osize[0] // 2, cy - osize[1] // 2),
            other_alpha.resize(osize, Image.Resampling.NEAREST),
        )
    # the shopper's rectangle: the garment with a loose, uneven margin
    bw, bh = x1 - x0, y1 - y0
    m = rng.uniform(-0.03, 0.15, 4) * np.array([bw, bh, bw, bh])
    rect = (max(0, x0 - m[0]), max(0, y0 - m[1]), min(canvas, x1 + m[2]), min(canvas, y1 + m[3]))
    view = scene.crop(tuple(int(round(v)) for v in rect))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.3:
        view = view.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    if rng.random() < 0.3:  # a low-resolution camera or a far-away garment
        f = rng.uniform(0.35, 0.8)
        small = (max(8, int(view.width * f)), max(8, int(view.height * f)))
        view = view.resize(small, Image.Resampling.BILINEAR).resize(view.size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    view.save(buf, format="JPEG", quality=int(rng.integers(40, 96)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def catalogue_view(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The product's region as the indexer may frame it: 80-100 % of each side, a touch of light."""
    w, h = image.size
    kw, kh = rng.uniform(0.8, 1.0, 2)
    x0, y0 = int(rng.uniform(0, 1 - kw) * w), int(rng.uniform(0, 1 - kh) * h)
    view = image.crop((x0, y0, x0 + max(8, int(kw * w)), y0 + max(8, int(kh * h))))
    return ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.9, 1.1)))


class PairViews(torch.utils.data.Dataset):
    """(catalogue view, shopper's view, category index) per product, drawn anew each time.

    The random draws come from torch's generator (one seed per item), so the training loop's saved
    random state replays them exactly on resume.
    """

    def __init__(self, images: Sequence[Image.Image], masks: Sequence[np.ndarray], labels, preprocess):
        if not len(images) == len(masks) == len(labels):
            raise ValueError(f"got {len(images)} images, {len(masks)} masks and {len(labels)} labels")
        self.images, self.masks, self.labels, self.preprocess = list(images), list(masks), labels, preprocess

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        rng = np.random.default_rng(int(torch.randint(2**62, (1,))))
        n = len(self.images)
        j, k = (int(v) for v in rng.integers(0, n, 2))
        occluder = (self.images[k], self.masks[k]) if k != i else None
        street = shopper_view(self.images[i], self.masks[i], rng, backdrop=self.images[j], occluder=occluder)
        shop = catalogue_view(self.images[i], rng)
        return self.preprocess(shop), self.preprocess(street), self.labels[i]


# -- the network and its loss ---------------------------------------------------------------------
class InstanceNetwork(nn.Module):
    """A ``CodeNetwork`` trained with its first ``frozen_stages`` stages and every batch norm frozen."""

    def __init__(self, net: CodeNetwork, *, frozen_stages: int):
        super().__init__()
        self.net = net
        self.frozen = frozen_modules(net.backbone, frozen_stages)
        for name in self.frozen:
            net.net.get_submodule(name).requires_grad_(False)

    def train(self, mode: bool = True) -> InstanceNetwork:
        super().train(mode)
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def soft_codes(features: torch.Tensor, gain: float = 2.0) -> torch.Tensor:
    """``tanh`` of each feature standardised over the batch: the code's relaxation, in (-1, 1)."""
    centred = features - features.mean(0, keepdim=True)
    return torch.tanh(gain * centred / (centred.std(0, keepdim=True) + 1e-6))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """Symmetric InfoNCE of paired rows of ``a`` and ``b`` (N, D); also the share of rows whose pair
    is their nearest."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss, float((logits.argmax(1) == target).float().mean())


class InstanceTask:
    """What the training loop optimises: InfoNCE on soft codes plus the category term."""

    def __init__(self, net: InstanceNetwork, head: nn.Linear, *, temperature: float, category_weight: float):
        self.model = nn.ModuleDict({"code": net, "head": head})
        self.temperature, self.category_weight = temperature, category_weight

    def parameters(self):
        return self.model.parameters()

    def loss(self, batch, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        shop, street, label = (t.to(device, non_blocking=True) for t in batch)
        feats = self.model["code"](torch.cat([shop, street])).float()
        codes = soft_codes(feats)
        nce, matched = info_nce(*codes.chunk(2), self.temperature)
        ce = F.cross_entropy(self.model["head"](feats).float(), torch.cat([label, label]))
        return nce + self.category_weight * ce, {"nce": float(nce.detach()), "pair_top1": matched}


# -- measuring ------------------------------------------------------------------------------------
def instance_recall(
    coder, catalogue: Sequence[Image.Image], queries: Sequence[Image.Image], *, ks: Sequence[int] = (1, 10)
) -> dict:
    """Recall@k of shopper views ``queries[i]`` finding their product ``catalogue[i]``, among all of
    ``catalogue``: by binary codes (Hamming) and by the float features they come from (centred cosine)."""
    cat_f, q_f = coder.features(list(catalogue)), coder.features(list(queries))
    cat_b = np.unpackbits(coder.binarize(cat_f), axis=1).astype(np.int32)
    q_b = np.unpackbits(coder.binarize(q_f), axis=1).astype(np.int32)
    hamming = q_b @ (1 - cat_b).T + (1 - q_b) @ cat_b.T
    c, q = cat_f - coder.median, q_f - coder.median
    c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    out: dict = {"queries": len(queries), "catalogue": len(catalogue)}
    for name, dist in (("binary", hamming.astype(np.float64)), ("float", -(q @ c.T))):
        # rank of the true product: how many score strictly better (ties in its favour)
        rank = (dist < dist[np.arange(len(dist)), np.arange(len(dist))][:, None]).sum(1)
        for k in ks:
            out[f"{name}_r@{k}"] = round(float((rank < k).mean()), 4)
    return out
