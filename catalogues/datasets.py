"""Reading the shared real datasets' layouts (clothing photos, ccp street photos).

Converters into product dumps live beside this module; here is what they share: the rows of
each dataset and the fixed ccp train/val split.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

CCP_VAL_SHARE = 0.2


def ccp_split(image: str) -> str:
    """'train' or 'val' for a ccp photo, fixed by a hash of its file name (20% val)."""
    digest = hashlib.sha1(Path(image).name.encode()).digest()
    return "val" if digest[0] < 256 * CCP_VAL_SHARE else "train"


def clothing_rows(root: str | Path, split: str | None = None) -> Iterator[dict]:
    """Rows of ``images.csv`` (image, sender_id, label, kids, split) with ``path`` added."""
    root = Path(root)
    index = root / "images.csv"
    if not index.is_file():
        raise FileNotFoundError(f"{root} does not look like the clothing dataset: no images.csv")
    with index.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if split and row["split"] != split:
                continue
            row["path"] = root / "images" / f"{row['image']}.jpg"
            row["kids"] = row.get("kids", "False") == "True"
            yield row


def ccp_rows(root: str | Path, split: str | None = None) -> Iterator[dict]:
    """Records of ``annotations.jsonl`` with ``photo`` and ``mask_path`` resolved and ``split`` added."""
    root = Path(root)
    index = root / "annotations.jsonl"
    if not index.is_file():
        raise FileNotFoundError(f"{root} does not look like the ccp dataset: no annotations.jsonl")
    with index.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            rec["split"] = ccp_split(rec["image"])
            if split and rec["split"] != split:
                continue
            rec["photo"] = root / rec["image"]
            rec["mask_path"] = root / rec["mask"]
            yield rec


def ccp_labels(root: str | Path) -> list[str]:
    return json.loads((Path(root) / "labels.json").read_text(encoding="utf-8"))
