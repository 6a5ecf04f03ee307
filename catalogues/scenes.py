"""Detector training scenes: ccp street photos with per-instance boxes, and composed shop scenes.

**ccp** (``convert_ccp``): one product per street photo, the image referenced where it lies.
Each annotated label is mapped with ``schema.dataset_category("ccp", label)``; labels mapped to
nothing (skin, hair, jewellery, belts, socks, ...) are left out. Boxes are derived from the
mask: for footwear (``shoes``, ``boots``: two shoes share one label) each connected component
(8-connected) of the label's pixels is its own instance; for every other category the box of
all the label's pixels is one instance (a strap or an arm splitting a jacket must not make two
jackets). Components below ``MIN_PIXELS`` pixels or ``MIN_SIDE`` pixels a side are dropped
(stray pixels at a garment's edge). Split: ``catalogues.datasets.ccp_split``.

**composed scenes** (``convert_scenes``, ``compose_scene``): garments cut from the single-garment
clothing photos and pasted, 1-4 per canvas, onto a synthetic background. The cut-out mask
(``foundation.cutout.garment_mask``: GrabCut from the photo's border) is shared with the
appearance code's instance training. Each pasted garment may be transformed: random crop keeping >= 85 % of
each side, scale, rotation within +-8 degrees, colour jitter; the scene is JPEG-recompressed
(quality 60-90). Garments are placed in disjoint slots, so boxes are those of the pasted pixels.

**on real backgrounds** (``SceneConfig(backgrounds=CCP_DIR)``, ``compose_on_photo``):
the canvas is a ccp street photo of the same split, its own garments kept with their boxes
(``ccp_instances``), and 1-3 cut-outs (transformed as above) pasted where they cover at most
``MAX_COVER`` of any box already there and are covered by those boxes at most as much; a
cut-out with no such place in ``PLACE_TRIES`` random draws is left out. The pasted garments'
longer side is 20-45 % of the photo's shorter side. Street, walls and people are thus real, and
every garment on the photo has its box.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageEnhance
from tqdm import tqdm

from catalogues.datasets import ccp_rows, clothing_rows
from foundation.cutout import garment_mask
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

MIN_PIXELS = 300
MIN_SIDE = 12
PAIRED = ("shoes", "boots")  # categories whose label covers a pair: split by connected components
SPLITS = ("train", "val")
MAX_COVER = 0.15  # share of a box that a cut-out pasted onto a street photo may cover, and be covered
PLACE_TRIES = 30


def _check_split(split: str | None) -> None:
    if split not in (None, *SPLITS):
        raise ValueError(f"unknown split {split!r}; choose train or val")


def write_dump(rows: list[dict], out: str | Path) -> Path:
    """``OUT/products.jsonl`` from row dicts, written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dump = out / "products.jsonl"
    tmp = dump.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(dump)
    return dump


# -- ccp ------------------------------------------------------------------------------------------
def ccp_instances(mask: np.ndarray, labels: list[str], schema: Schema) -> list[list]:
    """``[x0, y0, x1, y1, category]`` instances of a ccp label mask (pixel value = index in labels)."""
    boxes = []
    for value in np.unique(mask):
        category = schema.dataset_category("ccp", labels[value]) if value else None
        if category is None:
            continue
        pixels = (mask == value).astype(np.uint8)
        if category in PAIRED:
            n, _, stats, _ = cv2.connectedComponentsWithStats(pixels, connectivity=8)
            parts = [stats[i] for i in range(1, n)]
        else:
            ys, xs = np.nonzero(pixels)
            parts = [(xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, len(xs))]
        for x, y, w, h, area in parts:
            if area >= MIN_PIXELS and min(w, h) >= MIN_SIDE:
                boxes.append([int(x), int(y), int(x + w), int(y + h), category])
    return boxes


def convert_ccp(
    root: str | Path, out: str | Path, *, split: str | None = None, schema: Schema | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """Street photos with per-instance boxes -> ``OUT/products.jsonl``; returns the dump and counts."""
    _check_split(split)
    schema = schema or default_schema()
    labels = json.loads((Path(root) / "labels.json").read_text(encoding="utf-8"))
    rows, counts = [], {"products": 0, "boxes": 0, "left_out": 0}
    for rec in tqdm(list(ccp_rows(root, split)), desc="ccp boxes", unit="photo", disable=not progress):
        with Image.open(rec["mask_path"]) as im:
            mask = np.asarray(im.convert("L"))
        boxes = ccp_instances(mask, labels, schema)
        if not boxes:
            counts["left_out"] += 1
            continue
        rows.append(
            {
                "id": f"ccp-{Path(rec['image']).stem}",
                "image": str(Path(rec["photo"]).resolve()),
                "title": " ".join(rec.get("tags", [])) or "street photo",
                "category_path": "street",
                "boxes": boxes,
            }
        )
        counts["products"] += 1
        counts["boxes"] += len(boxes)
    return write_dump(rows, out), counts


# -- composing ------------------------------------------------------------------------------------
def _background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    a, b = rng.integers(40, 250, 3), rng.integers(40, 250, 3)
    t = np.linspace(0, 1, h)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, w)[None, :, None]
    bg = a * (1 - t) + b * t + rng.normal(0, rng.uniform(2, 12), (h, w, 3))
    return Image.fromarray(np.clip(np.broadcast_to(bg, (h, w, 3)), 0, 255).astype(np.uint8))


def _slots(n: int, size: tuple[int, int], rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    w, h = size
    cols = 1 if n == 1 else 2
    rows = -(-n // cols)
    cells = [
        (c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows)
        for r in range(rows)
        for c in range(cols)
    ]
    order = rng.permutation(len(cells))
    return [cells[i] for i in order[:n]]


def _transform(image: Image.Image, mask: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    w, h = image.size
    keep_w, keep_h = rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0)
    x0, y0 = int(rng.uniform(0, 1 - keep_w) * w), int(rng.uniform(0, 1 - keep_h) * h)
    box = (x0, y0, x0 + max(8, int(keep_w * w)), y0 + max(8, int(keep_h * h)))
    image, alpha = image.crop(box), Image.fromarray(mask.astype(np.uint8) * 255).crop(box)
    angle = float(rng.uniform(-8, 8))
    image = image.rotate(angle, resample=Image.BILINEAR, expand=True)
    alpha = alpha.rotate(angle, resample=Image.NEAREST, expand=True)
    for enhance, lo, hi in (
        (ImageEnhance.Brightness, 0.75, 1.25),
        (ImageEnhance.Contrast, 0.75, 1.25),
        (ImageEnhance.Color, 0.7, 1.3),
    ):
        image = enhance(image).enhance(float(rng.uniform(lo, hi)))
    return image, alpha


def compose_scene(
    garments: list[tuple],
    rng: np.random.Generator,
    *,
    canvas_size: tuple[int, int] = (448, 448),
    transform: bool = True,
) -> tuple[Image.Image, list[tuple]]:
    """Paste garments onto a background; returns the scene and, per garment in order, ``(box, category, source_id)``.

    Args:
        garments: 1-4 ``(PIL image, bool mask [H, W] or None, category, source_id)``; a None mask
            is made by ``garment_mask``.
        canvas_size: ``(width, height)`` of the scene.
        transform: random crop/scale, rotation, colour jitter and JPEG recompression when True.
    Returns ``box`` as ``(x0, y0, x1, y1)`` pixels of the pasted garment's pixels.
    """
    if not 1 <= len(garments) <= 4:
        raise ValueError(f"compose_scene takes 1 to 4 garments, got {len(garments)}")
    canvas = _background(canvas_size, rng)
    placed = []
    for (image, mask, category, source_id), (sx0, sy0, sx1, sy1) in zip(
        garments, _slots(len(garments), canvas_size, rng)
    ):
        image = image.convert("RGB")
        if mask is None:
            mask = garment_mask(image)
        if transform:
            piece, alpha = _transform(image, mask, rng)
        else:
            piece, alpha = image, Image.fromarray(mask.astype(np.uint8) * 255)
        ab = alpha.getbbox()
        if ab is None:
            raise ValueError(f"garment {source_id!r} has an empty mask")
        piece, alpha = piece.crop(ab), alpha.crop(ab)
        sw, sh = sx1 - sx0, sy1 - sy0
        scale = min(sw / piece.width, sh / piece.height) * (rng.uniform(0.6, 0.95) if transform else 0.9)
        size = (max(4, int(piece.width * scale)), max(4, int(piece.height * scale)))
        piece, alpha = piece.resize(size, Image.BILINEAR), alpha.resize(size, Image.NEAREST)
        ox = sx0 + int(rng.integers(0, max(1, sw - size[0] + 1)))
        oy = sy0 + int(rng.integers(0, max(1, sh - size[1] + 1)))
        canvas.paste(piece, (ox, oy), alpha)
        bx0, by0, bx1, by1 = alpha.getbbox() or (0, 0, size[0], size[1])
        placed.append(((float(ox + bx0), float(oy + by0), float(ox + bx1), float(oy + by1)), category, source_id))
    if transform:
        from io import BytesIO

        buf = BytesIO()
        canvas.save(buf, format="JPEG", quality=int(rng.integers(60, 91)))
        canvas = Image.open(BytesIO(buf.getvalue())).convert("RGB")
    return canvas, placed


def _cover(a: tuple, b: tuple) -> float:
    """Share of box ``a``'s area that box ``b`` covers."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return max(0.0, w) * max(0.0, h) / area if area > 0 else 1.0


def compose_on_photo(
    photo: Image.Image,
    boxes: list[list],
    garments: list[tuple],
    rng: np.random.Generator,
    *,
    size_range: tuple[float, float] = (0.2, 0.45),
) -> tuple[Image.Image, list[list]]:
    """Paste garments onto a photo beside the garments it has; returns the scene and every box.

    Args:
        photo: the background, a street photo.
        boxes: the photo's own ``[x0, y0, x1, y1, category]`` boxes (kept, first in the result).
        garments: ``(PIL image, bool mask [H, W], category, source_id)`` each; cut out and
            transformed as ``compose_scene`` does, then pasted where it covers at most
            ``MAX_COVER`` of any box already there (and is covered at most as much), or left out.
        size_range: the pasted garment's longer side, as shares of the photo's shorter side.
    Returns ``(scene, boxes)``, the pasted garments' boxes (of their pixels) after the photo's.
    """
    canvas = photo.convert("RGB").copy()
    width, height = canvas.size
    placed = [list(b) for b in boxes]
    for image, mask, category, source_id in garments:
        piece, alpha = _transform(image.convert("RGB"), mask, rng)
        ab = alpha.getbbox()
        if ab is None:
            raise ValueError(f"garment {source_id!r} has an empty mask")
        piece, alpha = piece.crop(ab), alpha.crop(ab)
        side = rng.uniform(*size_range) * min(width, height)
        scale = side / max(piece.size)
        size = (max(4, round(piece.width * scale)), max(4, round(piece.height * scale)))
        if size[0] >= width or size[1] >= height:
            continue
        piece, alpha = piece.resize(size, Image.BILINEAR), alpha.resize(size, Image.NEAREST)
        bx0, by0, bx1, by1 = alpha.getbbox() or (0, 0, *size)
        for _ in range(PLACE_TRIES):
            ox, oy = int(rng.integers(0, width - size[0] + 1)), int(rng.integers(0, height - size[1] + 1))
            box = (ox + bx0, oy + by0, ox + bx1, oy + by1)
            if all(_cover(b, box) <= MAX_COVER and _cover(box, b) <= MAX_COVER for b in placed):
                canvas.paste(piece, (ox, oy), alpha)
                placed.append([float(v) for v in box] + [category])
                break
    from io import BytesIO

    buf = BytesIO()
    canvas.save(buf, format="JPEG", quality=int(rng.integers(60, 91)))
    return Image.open(BytesIO(buf.getvalue())).convert("RGB"), placed


def compose_for_evaluation(target: Image.Image, others: list[Image.Image], rng: np.random.Generator):
    """The retrieval evaluation's composer: ``(scene, boxes)``, ``boxes[0]`` the target's ``(x0, y0, x1, y1)``."""
    garments = [(im, None, None, i) for i, im in enumerate([target, *others][:4])]
    scene, placed = compose_scene(garments, rng)
    return scene, [box for box, _, _ in placed]


def _street_photos(ccp_dir: str | Path, split: str | None, schema: Schema) -> list[tuple[Path, list[list]]]:
    """The ccp photos of ``split`` with their instance boxes (photos without any left out)."""
    labels = json.loads((Path(ccp_dir) / "labels.json").read_text(encoding="utf-8"))
    photos = []
    for rec in ccp_rows(ccp_dir, split):
        with Image.open(rec["mask_path"]) as im:
            boxes = ccp_instances(np.asarray(im.convert("L")), labels, schema)
        if boxes:
            photos.append((Path(rec["photo"]), boxes))
    if not photos:
        raise ValueError(f"no ccp photo of {ccp_dir} (split {split}) has a garment box")
    return photos


@dataclass(frozen=True)
class SceneConfig:
    """What ``convert_scenes`` composes: ``n`` scenes, seeded, of one split's clothing photos.

    ``canvas_size`` is the synthetic background's (width, height); ``backgrounds``, the ccp folder
    whose street photos (same split) are the canvases instead.
    """

    n: int
    seed: int = 0
    split: str | None = None
    canvas_size: tuple[int, int] = (448, 448)
    backgrounds: str | Path | None = None

    def __post_init__(self):
        _check_split(self.split)
        if self.n < 1:
            raise ValueError(f"--n must be at least 1, got {self.n}")


def convert_scenes(
    clothing_dir: str | Path,
    out: str | Path,
    config: SceneConfig,
    *,
    schema: Schema | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """``config.n`` composed scenes of clothing photos -> ``OUT/products.jsonl`` + ``OUT/images``.

    Without ``backgrounds``: 1-4 garments each on a synthetic background (``compose_scene``).
    With ``backgrounds`` (the ccp folder): 1-3 garments each pasted onto a street photo of the
    same split, whose own garments keep their boxes (``compose_on_photo``).
    """
    n, seed, split, backgrounds = config.n, config.seed, config.split, config.backgrounds
    schema = schema or default_schema()
    pool = []
    for row in clothing_rows(clothing_dir, split):
        category = schema.dataset_category("clothing", row["label"])
        if category is not None:
            pool.append((row["path"], category, row["image"]))
    if not pool:
        raise ValueError(f"no clothing photo of {clothing_dir} (split {split}) maps to a schema category")
    photos = _street_photos(backgrounds, split, schema) if backgrounds is not None else None
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 4])
    masks: dict[str, np.ndarray] = {}
    rows = []
    pasted = 0
    kind = "street" if photos else "composed"
    for i in tqdm(range(n), desc=f"{kind} scenes", unit="scene", disable=not progress):
        if photos:
            k = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        else:
            k = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
        garments = []
        for j in rng.choice(len(pool), size=k, replace=False):
            path, category, source = pool[j]
            with Image.open(path) as im:
                image = im.convert("RGB")
            image.thumbnail((320, 320))
            if source not in masks:
                masks[source] = garment_mask(image)
            garments.append((image, masks[source], category, source))
        if photos:
            photo_path, own = photos[int(rng.integers(len(photos)))]
            with Image.open(photo_path) as im:
                scene, boxes = compose_on_photo(im, own, garments, rng)
            pasted += len(boxes) - len(own)
        else:
            scene, placed = compose_scene(garments, rng, canvas_size=config.canvas_size)
            boxes = [[*box, c] for box, c, _ in placed]
            pasted += len(boxes)
        name = f"images/scene-{seed}-{i:06d}.jpg"
        scene.save(out / name, quality=92)
        rows.append(
            {
                "id": f"scene-{seed}-{i:06d}",
                "image": name,
                "title": " ".join(b[4] for b in boxes),
                "category_path": kind,
                "boxes": boxes,
            }
        )
    return write_dump(rows, out), {
        "products": len(rows),
        "boxes": sum(len(r["boxes"]) for r in rows),
        "pasted": pasted,
        "sources": len(masks),
    }
