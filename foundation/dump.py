"""The product dump: JSON Lines or CSV, streamed, validated row by row.

One product a row: ``id`` (unique string), ``image`` (path relative to the dump, or absolute),
``title`` and/or ``category_path``, optional ``price``, ``url`` and ``category`` (the seller's
explicit fashion category, which wins over what the text says), and for training data
optional ``attributes`` (group -> value) and ``boxes`` (``[x0, y0, x1, y1, category]`` in
pixels). In a CSV, ``attributes`` and ``boxes`` hold JSON text.

A bad row is reported (line, id, field, reason) and skipped; reading goes on.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from foundation.images import ImageError, image_size
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

FIELDS = ("id", "image", "title", "category_path", "price", "url", "category", "attributes", "boxes")


class Box(NamedTuple):
    """A garment's box in pixels, ``[x0, y0, x1, y1)``, and its schema category."""

    x0: float
    y0: float
    x1: float
    y1: float
    category: str


@dataclass(frozen=True)
class Product:
    id: str
    image: Path
    title: str = ""
    category_path: str = ""
    price: float | None = None
    url: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    boxes: tuple[Box, ...] = ()
    line: int = 0
    size: tuple[int, int] | None = None  # (width, height) from the header, when checked
    category: str | None = None  # the seller's explicit category (schema name)

    def to_json(self) -> dict:
        d = asdict(self)
        d["image"] = str(self.image)
        d["boxes"] = [list(b) for b in self.boxes]
        return d


@dataclass(frozen=True)
class RowProblem:
    line: int
    id: str | None
    field: str
    reason: str


@dataclass
class DumpReport:
    """Every bad row of a dump, machine-readable."""

    source: str = ""
    rows: int = 0
    good: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    def add(self, line: int, pid: str | None, field_: str, reason: str) -> None:
        self.problems.append(RowProblem(line, pid, field_, reason))
        logger.warning("%s line %d (id %r): %s: %s", self.source, line, pid, field_, reason)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "rows": self.rows,
            "good": self.good,
            "skipped": len(self.problems),
            "problems": [asdict(p) for p in self.problems],
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


class _Bad(Exception):
    def __init__(self, field_: str, reason: str):
        self.field, self.reason = field_, reason


def _raw_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, row dict or None, parse error) for each non-empty row."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None and v not in ("", None)}, None
        return
    with path.open(encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield n, None, f"not valid JSON: {exc.msg} at column {exc.colno}"
                continue
            if not isinstance(row, dict):
                yield n, None, "a row must be a JSON object"
                continue
            yield n, row, None


def _json_field(row: dict, name: str, kind: type):
    value = row.get(name)
    if isinstance(value, str):  # CSV cells hold JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Bad(name, f"not valid JSON: {value[:60]!r}") from None
    if value is not None and not isinstance(value, kind):
        raise _Bad(name, f"must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _parse_row(row: dict, base: Path, schema: Schema, check_images: bool) -> Product:
    pid = row.get("id")
    if pid is None or str(pid).strip() == "":
        raise _Bad("id", "missing id")
    pid = str(pid).strip()
    title = str(row.get("title") or "").strip()
    category_path = str(row.get("category_path") or "").strip()
    if not title and not category_path:
        raise _Bad("title", "neither title nor category_path is given")
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        raise _Bad("image", "missing image path")
    image_path = Path(image)
    if not image_path.is_absolute():
        image_path = base / image_path
    size = None
    if check_images:
        try:
            size = image_size(image_path)
        except ImageError as exc:
            raise _Bad("image", str(exc)) from None
    price = row.get("price")
    if price is not None:
        try:
            price = float(price)
        except (TypeError, ValueError):
            raise _Bad("price", f"not a number: {price!r}") from None
        if not math.isfinite(price) or price < 0:
            raise _Bad("price", f"must be a non-negative number, got {price!r}")
    url = row.get("url")
    category = str(row.get("category") or "").strip() or None
    if category is not None and category not in schema.categories:
        raise _Bad("category", f"unknown category {category[:100]!r}")
    attributes = _json_field(row, "attributes", dict) or {}
    attributes = {str(k): str(v) for k, v in attributes.items()}
    errors = schema.attribute_errors(attributes)
    if errors:
        raise _Bad("attributes", "; ".join(errors))
    boxes = []
    for i, raw in enumerate(_json_field(row, "boxes", list) or []):
        if not (isinstance(raw, (list, tuple)) and len(raw) == 5):
            raise _Bad("boxes", f"box {i} must be [x0, y0, x1, y1, category], got {raw!r}")
        *coords, category = raw
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in coords):
            raise _Bad("boxes", f"box {i} has non-numeric coordinates {coords!r}")
        x0, y0, x1, y1 = (float(c) for c in coords)
        if not (x1 > x0 and y1 > y0):
            raise _Bad("boxes", f"box {i} is empty or inverted: {coords!r}")
        if x0 < 0 or y0 < 0 or (size and (x1 > size[0] or y1 > size[1])):
            raise _Bad("boxes", f"box {i} {coords!r} lies outside the image {size}")
        if category not in schema.categories:
            raise _Bad("boxes", f"box {i} has unknown category {category!r}")
        boxes.append(Box(x0, y0, x1, y1, category))
    return Product(
        id=pid,
        image=image_path,
        title=title,
        category_path=category_path,
        price=price,
        url=str(url) if url else None,
        attributes=attributes,
        boxes=tuple(boxes),
        size=size,
        category=category,
    )


def read_dump(
    path: str | Path,
    *,
    schema: Schema | None = None,
    report: DumpReport | None = None,
    check_images: bool = True,
) -> Iterator[Product]:
    """Stream the good products of a dump; every bad row goes to ``report`` and is skipped.

    Args:
        path: a ``.jsonl`` (or ``.json``) or ``.csv`` file; image paths are relative to its folder.
        check_images: open each image's header (not its pixels) to catch missing, empty and
            unreadable files and to check boxes against the image size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no product dump at {path}")
    schema = schema or default_schema()
    report = report if report is not None else DumpReport()
    report.source = str(path)
    seen: set[str] = set()
    base = path.parent
    for line, row, error in _raw_rows(path):
        report.rows += 1
        if error:
            report.add(line, None, "row", error)
            continue
        try:
            product = _parse_row(row, base, schema, check_images)
        except _Bad as bad:
            report.add(line, str(row.get("id")) if row.get("id") is not None else None, bad.field, bad.reason)
            continue
        if product.id in seen:
            report.add(line, product.id, "id", f"duplicate id {product.id!r}")
            continue
        seen.add(product.id)
        report.good += 1
        yield Product(**{**product.__dict__, "line": line})
