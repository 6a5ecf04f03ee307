"""Converters from the shared real datasets into product dumps (training data for the models).

**clothing** (``convert_clothing``): one product per photo whose label maps to a schema category
(``[datasets.clothing]`` in the schema; "Not sure" and "Other" are left out). Images are
referenced where they lie (absolute paths), never copied. Derived attributes:

- ``category`` from the label through the schema's map, ``great_category`` from the category;
- ``age_group``: ``kids`` when the ``kids`` column is True, else ``adult``;
- ``sleeve_length`` only where the category implies it (``SLEEVES_IMPLIED``: t-shirt and polo
  short, longsleeve, hoodie, sweater, blazer and "Outwear" (jacket) long, undershirt
  sleeveless); shirts, blouses, tops, dresses and bodysuits come with either, so none is given;
- no colour: a colour read from pixels was not checked by eye on a sample, so none is claimed.

The title is the label as a seller would write it (``Kids T-Shirt``); the category path is
``kids`` or ``clothes``. The split is the dataset's own ``split`` column (by photographer).

**ccp crops** (``convert_ccp_crops``): one product per garment box of a street photo whose label
maps to a schema category and whose box is large enough to show the garment (at least
``MIN_SIDE`` pixels a side and ``MIN_PIXELS`` mask pixels). The crop, with a 5 % margin, is
written as a JPEG under ``OUT/images``. Attributes: ``category``/``great_category`` from the
label as above and ``sleeve_length`` where implied; no age group (the photos do not say) and no
colour. The split is ``catalogues.datasets.ccp_split`` (fixed by file name).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from catalogues.datasets import ccp_rows, clothing_rows
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

SLEEVES_IMPLIED = {
    "t-shirt": "short",
    "polo": "short",
    "longsleeve": "long",
    "hoodie": "long",
    "sweater": "long",
    "blazer": "long",
    "jacket": "long",
    "coat": "long",
    "undershirt": "sleeveless",
}
MIN_SIDE = 32
MIN_PIXELS = 1500
MARGIN = 0.05
SPLITS = ("train", "val")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use train or val")


def derived_attributes(category: str, schema: Schema, *, kids: bool | None = None) -> dict[str, str]:
    """The attributes a label implies (see the module docstring)."""
    a = {}
    if kids is not None:
        a["age_group"] = "kids" if kids else "adult"
    if category in SLEEVES_IMPLIED and schema.applies("sleeve_length", category):
        a["sleeve_length"] = SLEEVES_IMPLIED[category]
    return schema.complete(a, category)


def _write(rows: list[dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    dump = out / "products.jsonl"
    tmp = dump.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.replace(dump)
    return dump


def convert_clothing(
    root: str | Path, out: str | Path, *, split: str | None = None, schema: Schema | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """Write ``OUT/products.jsonl`` from the clothing photos; returns the dump and counts."""
    _check_split(split)
    schema = schema or default_schema()
    rows, counts = [], {"products": 0, "left_out": 0}
    for r in tqdm(list(clothing_rows(root, split)), desc="clothing", unit="img", disable=not progress):
        category = schema.dataset_category("clothing", r["label"])
        if category is None or not Path(r["path"]).is_file():
            counts["left_out"] += 1
            continue
        title = ("Kids " if r["kids"] else "") + r["label"]
        rows.append(
            {
                "id": f"clothing-{r['image']}",
                "image": str(Path(r["path"]).resolve()),
                "title": title,
                "category_path": "kids" if r["kids"] else "clothes",
                "attributes": derived_attributes(category, schema, kids=r["kids"]),
            }
        )
        counts["products"] += 1
    return _write(rows, Path(out)), counts


def convert_ccp_crops(
    root: str | Path, out: str | Path, *, split: str | None = None, schema: Schema | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """Write garment crops of the street photos and ``OUT/products.jsonl``; returns the dump and counts."""
    _check_split(split)
    schema = schema or default_schema()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, counts = [], {"products": 0, "left_out": 0, "photos": 0}
    for rec in tqdm(list(ccp_rows(root, split)), desc="ccp crops", unit="photo", disable=not progress):
        counts["photos"] += 1
        stem = Path(rec["image"]).stem
        with Image.open(rec["photo"]) as im:
            photo = im.convert("RGB")
        for k, b in enumerate(rec["boxes"]):
            category = schema.dataset_category("ccp", b["label"])
            x0, y0, x1, y1 = b["box"]
            if category is None or min(x1 - x0, y1 - y0) < MIN_SIDE or b.get("pixels", 0) < MIN_PIXELS:
                counts["left_out"] += 1
                continue
            mx, my = MARGIN * (x1 - x0), MARGIN * (y1 - y0)
            crop_box = (
                max(0, int(x0 - mx)),
                max(0, int(y0 - my)),
                min(photo.width, int(x1 + mx + 1)),
                min(photo.height, int(y1 + my + 1)),
            )
            name = f"images/{stem}-{k:02d}-{b['label']}.jpg"
            photo.crop(crop_box).save(out / name, quality=92)
            rows.append(
                {
                    "id": f"ccp-{stem}-{k:02d}",
                    "image": name,
                    "title": b["label"],
                    "category_path": "street",
                    "attributes": derived_attributes(category, schema),
                }
            )
            counts["products"] += 1
    return _write(rows, out), counts
