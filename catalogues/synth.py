"""A synthetic product catalogue: procedurally drawn garments with known attributes and boxes.

Each image holds 1-3 garments side by side on a textured background; the product for sale is
one of them, named by the title a seller would write from its attributes. Every garment's box
is exact (the bounding box of its drawn pixels, ``x1``/``y1`` exclusive). The colour, pattern,
sleeve length, garment length, neckline and fit of each garment are drawn, so a model can learn
them; the age group is only in the text.

This is the demo's default catalogue and the tests' fixture. It never stands in for real data
in a quality figure.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

SIZE = 256
_RAMP = (np.arange(SIZE, dtype=np.float32) / SIZE).reshape(SIZE, 1, 1)

COLOURS = {
    "black": (25, 25, 28),
    "white": (240, 240, 236),
    "grey": (128, 128, 132),
    "red": (200, 30, 35),
    "orange": (240, 130, 20),
    "yellow": (240, 215, 40),
    "green": (40, 150, 60),
    "blue": (35, 70, 190),
    "purple": (120, 45, 160),
    "pink": (240, 140, 180),
    "brown": (110, 65, 30),
    "beige": (215, 195, 155),
}
PATTERNS = ("solid", "striped", "dotted", "checked")
# Drawable categories: (aspect w/h of the garment's box, the attribute choices it draws).
KINDS = {
    "t-shirt": (
        1.0,
        {"sleeve_length": ["short"], "neckline": ["round", "v-neck"], "fit": ["slim", "regular", "loose"]},
    ),
    "longsleeve": (
        1.0,
        {"sleeve_length": ["long"], "neckline": ["round", "v-neck", "hooded"], "fit": ["slim", "regular", "loose"]},
    ),
    "shirt": (0.95, {"sleeve_length": ["short", "long"], "neckline": ["collar"], "fit": ["slim", "regular", "loose"]}),
    "dress": (
        0.6,
        {
            "sleeve_length": ["sleeveless", "short", "long"],
            "garment_length": ["short", "knee", "long"],
            "neckline": ["round", "v-neck"],
            "fit": ["slim", "regular", "loose"],
        },
    ),
    "jacket": (
        0.9,
        {
            "sleeve_length": ["long"],
            "garment_length": ["short", "knee"],
            "neckline": ["collar", "hooded"],
            "fit": ["slim", "regular", "loose"],
        },
    ),
    "pants": (0.6, {"garment_length": ["long"], "fit": ["slim", "regular", "loose"]}),
    "shorts": (1.0, {"garment_length": ["short"], "fit": ["slim", "regular", "loose"]}),
    "skirt": (0.85, {"garment_length": ["short", "knee", "long"], "fit": ["slim", "regular", "loose"]}),
    "shoes": (2.0, {}),
    "bag": (1.0, {}),
    "hat": (1.6, {}),
}
_SELLER_WORDS = {
    "t-shirt": ["t-shirt", "tee", "T-Shirt", "tshirt"],
    "longsleeve": ["long sleeve tee", "longsleeve", "long-sleeve t-shirt"],
    "shirt": ["shirt", "button-down shirt", "dress shirt", "oxford shirt"],
    "dress": ["dress", "sundress", "midi dress"],
    "jacket": ["jacket", "bomber jacket", "windbreaker"],
    "pants": ["pants", "trousers", "chinos"],
    "shorts": ["shorts", "bermuda shorts"],
    "skirt": ["skirt", "pleated skirt"],
    "shoes": ["sneakers", "shoes", "loafers"],
    "bag": ["bag", "handbag", "tote bag"],
    "hat": ["hat", "cap", "bucket hat"],
}
_GREAT_PATH = {
    "tops": "tops",
    "bottoms": "bottoms",
    "dresses": "dresses",
    "outerwear": "outerwear",
    "shoes": "shoes",
    "bags": "bags",
    "hats": "accessories",
}


@dataclass(frozen=True)
class Garment:
    category: str
    attributes: dict
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def _top_mask(d: ImageDraw.ImageDraw, w: int, h: int, a: dict, torso_len: float = 1.0) -> None:
    fit = {"slim": 0.2, "regular": 0.25, "loose": 0.3}[a.get("fit", "regular")]
    x0, x1 = w * (0.5 - fit), w * (0.5 + fit)
    y1 = h * min(1.0, 0.15 + 0.85 * torso_len)
    d.polygon([(x0, h * 0.1), (x1, h * 0.1), (x1, y1), (x0, y1)], fill=255)
    sleeve = a.get("sleeve_length", "long")
    if sleeve != "sleeveless":
        reach = {"short": 0.3, "long": 0.75}[sleeve]
        for side in (-1, 1):
            sx = x0 if side < 0 else x1
            ex = sx + side * w * (0.15 if sleeve == "short" else 0.2)
            d.polygon(
                [
                    (sx, h * 0.1),
                    (ex, h * 0.1 + h * reach),
                    (ex + side * w * 0.1 - side * w * 0.02, h * 0.1 + h * reach - h * 0.02),
                    (ex + side * w * 0.1, h * 0.1 + h * reach),
                    (sx, h * 0.35),
                ],
                fill=255,
            )
            d.polygon(
                [
                    (sx, h * 0.1),
                    (sx + side * w * 0.08, h * 0.1),
                    (ex + side * w * 0.1, h * 0.1 + h * reach),
                    (ex, h * 0.1 + h * reach),
                ],
                fill=255,
            )
    neck = a.get("neckline")
    cx = w / 2
    if neck == "round":
        d.ellipse([cx - w * 0.09, h * 0.03, cx + w * 0.09, h * 0.2], fill=0)
    elif neck == "v-neck":
        d.polygon([(cx - w * 0.1, h * 0.1), (cx + w * 0.1, h * 0.1), (cx, h * 0.32)], fill=0)
    elif neck == "hooded":
        d.ellipse([cx - w * 0.13, 0, cx + w * 0.13, h * 0.22], fill=255)
    elif neck == "collar":
        d.polygon(
            [
                (cx - w * 0.12, h * 0.1),
                (cx, h * 0.2),
                (cx + w * 0.12, h * 0.1),
                (cx + w * 0.14, h * 0.02),
                (cx - w * 0.14, h * 0.02),
            ],
            fill=255,
        )
        d.polygon([(cx - w * 0.05, h * 0.1), (cx + w * 0.05, h * 0.1), (cx, h * 0.18)], fill=0)


def _draw_mask(category: str, w: int, h: int, a: dict) -> np.ndarray:
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    fit = {"slim": 0.8, "regular": 1.0, "loose": 1.2}[a.get("fit", "regular")]
    if category in ("t-shirt", "longsleeve", "shirt"):
        _top_mask(d, w, h, a)
        if category == "shirt":
            d.line([(w / 2, h * 0.2), (w / 2, h)], fill=0, width=max(1, w // 60))
    elif category == "jacket":
        _top_mask(d, w, h, a, torso_len={"short": 0.85, "knee": 1.0}[a["garment_length"]])
        d.line([(w / 2, h * 0.18), (w / 2, h)], fill=0, width=max(2, w // 30))
    elif category == "dress":
        length = {"short": 0.55, "knee": 0.78, "long": 1.0}[a["garment_length"]]
        _top_mask(d, w, h * 0.5, a, torso_len=0.8)
        flare = 0.25 * fit
        d.polygon(
            [
                (w * (0.5 - 0.18 * fit), h * 0.38),
                (w * (0.5 + 0.18 * fit), h * 0.38),
                (w * (0.5 + 0.18 + flare), h * length),
                (w * (0.5 - 0.18 - flare), h * length),
            ],
            fill=255,
        )
    elif category in ("pants", "shorts"):
        length = 1.0 if category == "pants" else 0.45
        half = 0.2 * fit
        d.rectangle([w * (0.5 - half - 0.05), 0, w * (0.5 + half + 0.05), h * 0.12], fill=255)
        for side in (-1, 1):
            inner, outer = w * 0.5 + side * w * 0.015, w * 0.5 + side * w * (half + 0.05)
            hem_out = w * 0.5 + side * w * (half + 0.05 + (0.04 if category == "shorts" else 0.0))
            d.polygon(
                [(inner, h * 0.12), (outer, 0), (hem_out, h * length), (w * 0.5 + side * w * 0.05, h * length)],
                fill=255,
            )
        d.polygon(
            [
                (w * 0.5 - w * 0.05, h * 0.12),
                (w * 0.5 + w * 0.05, h * 0.12),
                (w * 0.5 + w * 0.05, h * length),
                (w * 0.5 - w * 0.05, h * length),
            ],
            fill=0,
        )
        d.rectangle([w * (0.5 - half - 0.05), 0, w * (0.5 + half + 0.05), h * 0.2], fill=255)
    elif category == "skirt":
        length = {"short": 0.45, "knee": 0.72, "long": 1.0}[a["garment_length"]]
        d.polygon(
            [
                (w * (0.5 - 0.2 * fit), 0),
                (w * (0.5 + 0.2 * fit), 0),
                (w * (0.5 + 0.2 + 0.22 * fit), h * length),
                (w * (0.5 - 0.2 - 0.22 * fit), h * length),
            ],
            fill=255,
        )
    elif category == "shoes":
        d.polygon(
            [
                (w * 0.05, h * 0.2),
                (w * 0.35, h * 0.2),
                (w * 0.45, h * 0.5),
                (w * 0.95, h * 0.65),
                (w * 0.95, h * 0.95),
                (w * 0.05, h * 0.95),
            ],
            fill=255,
        )
    elif category == "bag":
        d.rectangle([w * 0.1, h * 0.35, w * 0.9, h * 0.98], fill=255)
        d.arc([w * 0.28, h * 0.02, w * 0.72, h * 0.6], 180, 360, fill=255, width=max(2, w // 14))
    elif category == "hat":
        d.ellipse([0, h * 0.55, w, h * 0.95], fill=255)
        d.chord([w * 0.2, h * 0.05, w * 0.8, h * 1.2], 180, 360, fill=255)
    else:
        raise ValueError(f"the synthetic catalogue cannot draw {category!r}")
    return np.asarray(im) > 127


def _texture(
    h: int, w: int, colour: np.ndarray, second: np.ndarray, pattern: str, rng: np.random.Generator
) -> np.ndarray:
    tex = np.broadcast_to(colour, (h, w, 3)).copy()
    period = int(rng.integers(8, 16))
    yy, xx = np.ogrid[0:h, 0:w]
    if pattern == "striped":
        sel = np.broadcast_to(
            (yy % period) < period // 2.5 if rng.random() < 0.7 else (xx % period) < period // 2.5, (h, w)
        )
    elif pattern == "dotted":
        r = period / 4.5
        sel = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < r * r
    elif pattern == "checked":
        sel = ((yy // period) + (xx // period)) % 2 == 1
    else:
        return tex
    tex[sel] = second
    return tex


def _background(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    while True:
        base = rng.integers(0, 256, 3).astype(np.float32)
        if all(np.abs(base - a).sum() > 150 for a in avoid):
            break
    style = rng.integers(0, 3)
    if style == 0:
        img = np.broadcast_to(base, (SIZE, SIZE, 3))
    elif style == 1:
        other = rng.integers(0, 256, 3).astype(np.float32)
        t = _RAMP if rng.random() < 0.5 else _RAMP.transpose(1, 0, 2)
        img = base * (1 - 0.35 * t) + other * 0.35 * t
    else:
        img = base + 12 * rng.standard_normal((SIZE, SIZE, 1), dtype=np.float32)
    return np.clip(np.broadcast_to(img, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _random_attributes(category: str, schema: Schema, rng: np.random.Generator) -> dict:
    a = {"age_group": "kids" if rng.random() < 0.15 else "adult"}
    a["colour"] = str(rng.choice(list(COLOURS)))
    a["pattern"] = str(rng.choice(PATTERNS, p=[0.55, 0.2, 0.12, 0.13]))
    for group, choices in KINDS[category][1].items():
        a[group] = str(rng.choice(choices))
    return schema.complete(a, category)


def _layout(n: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """n non-overlapping regions of the canvas."""
    if n == 1:
        return [(0, 0, SIZE, SIZE)]
    cuts = np.sort(rng.uniform(0.35, 0.65, n - 1)) if n == 2 else np.array([1 / 3, 2 / 3]) + rng.uniform(-0.05, 0.05, 2)
    edges = [0, *[int(c * SIZE) for c in cuts], SIZE]
    if rng.random() < 0.5:
        return [(edges[i], 0, edges[i + 1], SIZE) for i in range(n)]
    return [(0, edges[i], SIZE, edges[i + 1]) for i in range(n)]


def draw_scene(categories: list[str], schema: Schema, rng: np.random.Generator) -> tuple[Image.Image, list[Garment]]:
    """An image holding one garment of each given category, with their attributes and boxes."""
    attrs = [_random_attributes(c, schema, rng) for c in categories]
    bg = _background(rng, [np.array(COLOURS[a["colour"]], np.float32) for a in attrs])
    canvas = bg
    garments = []
    for category, a, (rx0, ry0, rx1, ry1) in zip(categories, attrs, _layout(len(categories), rng)):
        aspect = KINDS[category][0]
        rw, rh = rx1 - rx0, ry1 - ry0
        scale = rng.uniform(0.6, 0.95)
        w = min(rw * scale, rh * scale * aspect)
        h = w / aspect
        w, h = max(int(w), 16), max(int(h), 16)
        ox = rx0 + int(rng.integers(0, max(1, rw - w + 1)))
        oy = ry0 + int(rng.integers(0, max(1, rh - h + 1)))
        mask = _draw_mask(category, w, h, a)
        colour = np.clip(np.array(COLOURS[a["colour"]], np.float32) + rng.normal(0, 8, 3), 0, 255)
        second = np.array(
            (245, 245, 245) if a["colour"] not in ("white", "beige", "yellow") else (30, 30, 30), np.float32
        )
        tex = _texture(h, w, colour, second, a["pattern"], rng)
        shade = (1.0 - 0.12 * np.linspace(0, 1, h, dtype=np.float32))[:, None, None]
        region = canvas[oy : oy + h, ox : ox + w]
        region[mask] = np.clip(tex * shade, 0, 255).astype(np.uint8)[mask]
        ys, xs = np.nonzero(mask)
        box = (ox + int(xs.min()), oy + int(ys.min()), ox + int(xs.max()) + 1, oy + int(ys.max()) + 1)
        garments.append(Garment(category, a, box))
    img = Image.fromarray(canvas)
    return img, garments


def seller_text(category: str, a: dict, rng: np.random.Generator) -> tuple[str, str]:
    """(title, category_path) as a seller might type them."""
    words = []
    if a.get("age_group") == "kids":
        words.append(str(rng.choice(["Kids", "Kids'", "Children's"])))
    words.append(a["colour"])
    if a["pattern"] != "solid":
        words.append(a["pattern"])
    if category in ("shirt", "dress") and "sleeve_length" in a:
        words.append({"sleeveless": "sleeveless", "short": "short-sleeve", "long": "long-sleeve"}[a["sleeve_length"]])
    if a.get("fit") and rng.random() < 0.5:
        words.append(f"{a['fit']} fit")
    if category in ("skirt", "dress") and a.get("garment_length"):
        words.append({"short": "mini", "knee": "knee-length", "long": "maxi"}[a["garment_length"]])
    words.append(str(rng.choice(_SELLER_WORDS[category])))
    title = " ".join(words)
    title = title[0].upper() + title[1:]
    who = (
        "kids"
        if a.get("age_group") == "kids"
        else str(rng.choice(["women's clothes", "men's clothes", "women", "men"]))
    )
    path = f"{who}/{_GREAT_PATH[a['great_category']]}" if rng.random() < 0.8 else ""
    return title, path


def synthesize(out: str | Path, n: int, seed: int = 0, *, schema: Schema | None = None, progress: bool = True) -> Path:
    """Write ``n`` products (images + ``products.jsonl``) under ``out``; returns the dump path.

    Deterministic per seed: product ``i`` depends only on ``(seed, i)``.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    schema = schema or default_schema()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    dump = out / "products.jsonl"
    tmp = dump.with_suffix(".jsonl.tmp")
    kinds = list(KINDS)
    t0 = time.perf_counter()
    with tmp.open("w", encoding="utf-8") as fh:
        for i in tqdm(range(n), desc="synth", unit="img", disable=not progress):
            rng = np.random.default_rng([seed, i])
            count = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
            cats = [str(c) for c in rng.choice(kinds, size=count, replace=False)]
            img, garments = draw_scene(cats, schema, rng)
            product = garments[int(rng.integers(0, count))]
            title, path = seller_text(product.category, product.attributes, rng)
            name = f"images/{i:06d}.jpg"
            img.save(out / name, quality=92)
            row = {
                "id": f"synth-{seed}-{i:06d}",
                "image": name,
                "title": title,
                "category_path": path,
                "price": round(float(rng.uniform(5, 150)), 2),
                "attributes": product.attributes,
                "boxes": [[*g.box, g.category] for g in garments],
            }
            fh.write(json.dumps(row) + "\n")
    tmp.replace(dump)
    logger.info("wrote %d products to %s in %.1fs", n, dump, time.perf_counter() - t0)
    return dump
