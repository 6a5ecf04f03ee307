"""The product dump: JSON Lines or CSV, streamed, validated row by row.

One product a row: ``id`` (unique string), ``image`` (path relative to the dump, or absolute)
and/or ``images`` (a list of such paths: a product with several photos; ``image`` first when both
are given, a path given twice kept once, at most ``MAX_PHOTOS``), ``title`` and/or
``category_path``, optional ``price``, ``url`` and ``category`` (the seller's explicit fashion
category, which wins over what the text says), and for training data optional ``attributes``
(group -> value) and ``boxes`` (``[x0, y0, x1, y1, category]`` in pixels, on the first photo).
In a CSV, ``images``, ``attributes`` and ``boxes`` hold JSON text. A checked ``Product`` holds
its photos in that order (``photos``, each a ``Photo``).

A bad row is reported (line, id, field, reason) and skipped; reading goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from foundation.boxes import Box
from foundation.echo import echo
from foundation.images import ImageError, image_size
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

FIELDS = ("id", "image", "images", "title", "category_path", "price", "url", "category", "attributes", "boxes")


@dataclass(frozen=True)
class Photo:
    """One photo of a product in the dump."""

    path: Path  # as given, under the dump's folder when relative
    size: tuple[int, int] | None = None  # (width, height) from the header, when checked (the first photo)


@dataclass(frozen=True)
class Product:
    id: str
    photos: tuple[Photo, ...] = ()  # in the dump's order; none for a product added through the API
    title: str = ""
    category_path: str = ""
    price: float | None = None
    url: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    boxes: tuple[Box, ...] = ()  # on the first photo
    line: int = 0
    category: str | None = None  # the seller's explicit category (schema name)

    def to_json(self) -> dict:
        """The product as a dump row (``image``: the first photo, ``images``: every one)."""
        d = asdict(self)
        del d["photos"]
        paths = [str(p.path) for p in self.photos]
        d["image"] = paths[0] if paths else None
        d["images"] = paths
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


MAX_ID_CHARS = 200
MAX_ID_BYTES = 511  # LMDB's key limit
MAX_TEXT = 1000  # characters in a title or category path
MAX_URL = 2000
MAX_PHOTOS = 16  # photos of one product (the Cdiscount dump has 1 to 4)


class ProductError(ValueError):
    """A product field that cannot be used: ``field`` names it, the message says why."""

    def __init__(self, field_: str, reason: str):
        super().__init__(f"{field_}: {reason}")
        self.field, self.reason = field_, reason


_Bad = ProductError


def check_id(value) -> str:
    """A product id: 1 to 200 characters and at most 511 bytes, no control characters, no ``/``,
    not ``.`` or ``..``, so that it is an LMDB key and one URL path segment."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ProductError("id", "missing id")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ProductError("id", f"must be a string, got {type(value).__name__}")
    pid = str(value).strip()
    if len(pid) > MAX_ID_CHARS:
        raise ProductError("id", f"{echo(pid)} is {len(pid)} characters long; the limit is {MAX_ID_CHARS}")
    if len(pid.encode("utf-8")) > MAX_ID_BYTES:
        raise ProductError("id", f"{echo(pid)} is {len(pid.encode())} bytes in UTF-8; the limit is {MAX_ID_BYTES}")
    if any(ord(c) < 32 or ord(c) == 127 for c in pid):
        raise ProductError("id", f"{echo(pid)} holds control characters")
    if "/" in pid or "\\" in pid or pid in (".", ".."):
        raise ProductError("id", f"{echo(pid)} holds '/' or '\\' or is a dot segment; ids are one URL path segment")
    return pid


def check_text(name: str, value, limit: int = MAX_TEXT) -> str:
    """A free-text field: at most ``limit`` characters, no control characters but tab."""
    if value is None:
        return ""
    text = str(value).strip()
    if len(text) > limit:
        raise ProductError(name, f"is {len(text)} characters long; the limit is {limit}")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text):
        raise ProductError(name, f"{echo(text)} holds control characters")
    return text


def _raw_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, row dict or None, parse error) for each non-empty row."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None and v not in ("", None)}, None
        return
    with path.open(encoding="utf-8-sig") as fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield n, None, f"not valid JSON: {exc.msg} at character {exc.colno} of the line"
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


def check_product(
    row: Mapping, *, schema: Schema, base: Path | None = None, check_images: bool = False, image_required: bool = True
) -> Product:
    """One product's fields checked, for a dump row and a product added through the API alike.

    Raises:
        ProductError: the first bad field, named, with the reason.
    """
    pid = check_id(row.get("id"))
    title = check_text("title", row.get("title"))
    category_path = check_text("category_path", row.get("category_path"))
    if not title and not category_path:
        raise _Bad("title", "neither title nor category_path is given")
    paths = _image_paths(row, base)
    if image_required and not paths:
        raise _Bad("image", "missing image path: give image or images")
    photos = [Photo(path) for path in paths]
    size = None
    if check_images and photos:
        try:
            size = image_size(photos[0].path)
        except ImageError as exc:
            raise _Bad("image", str(exc)) from None
        photos[0] = Photo(photos[0].path, size)
    price = row.get("price")
    if price is not None:
        try:
            price = float(price)
        except (TypeError, ValueError):
            raise _Bad("price", f"not a number: {price!r}") from None
        if not math.isfinite(price) or price < 0:
            raise _Bad("price", f"must be a non-negative number, got {price!r}")
    url = check_text("url", row.get("url"), MAX_URL) or None
    if url and not url.lower().startswith(("http://", "https://", "/")):
        raise _Bad("url", f"{echo(url)} is not an http(s) address")
    category = str(row.get("category") or "").strip() or None
    if category is not None and category not in schema.categories:
        raise _Bad("category", f"unknown category {echo(category)}")
    attributes = _json_field(row, "attributes", dict) or {}
    attributes = {str(k): str(v) for k, v in attributes.items()}
    errors = schema.attribute_errors(attributes)
    if errors:
        raise _Bad("attributes", "; ".join(errors))
    boxes = []
    for i, raw in enumerate(_json_field(row, "boxes", list) or []):
        if not (isinstance(raw, (list, tuple)) and len(raw) == 5):
            raise _Bad("boxes", f"box {i} must be [x0, y0, x1, y1, category], got {echo(raw)}")
        *coords, box_category = raw
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in coords):
            raise _Bad("boxes", f"box {i} has non-numeric coordinates {echo(coords)}")
        x0, y0, x1, y1 = (float(c) for c in coords)
        if not (x1 > x0 and y1 > y0):
            raise _Bad("boxes", f"box {i} is empty or inverted: {coords!r}")
        if x0 < 0 or y0 < 0:
            raise _Bad("boxes", f"box {i} {coords!r} has negative coordinates")
        if box_category not in schema.categories:
            raise _Bad("boxes", f"box {i} has unknown category {echo(box_category)}")
        boxes.append(Box(x0, y0, x1, y1, box_category))
    if size is not None:
        check_boxes(boxes, size)
    return Product(
        id=pid,
        photos=tuple(photos),
        title=title,
        category_path=category_path,
        price=price,
        url=url,
        attributes=attributes,
        boxes=tuple(boxes),
        category=category,
    )


def _image_paths(row: Mapping, base: Path | None) -> list[Path]:
    """``image`` then ``images``, each path once, relative ones under ``base``."""
    image = row.get("image")
    if image is not None and not isinstance(image, str):
        raise _Bad("image", f"must be a path, got {type(image).__name__}")
    listed = _json_field(row, "images", list) or []
    raw = ([image] if image and image.strip() else []) + listed
    paths: list[Path] = []
    for i, value in enumerate(raw):
        if not isinstance(value, str) or not value.strip():
            raise _Bad("images", f"photo {i} must be a non-empty path, got {echo(value)}")
        path = Path(value.strip())
        if base is not None and not path.is_absolute():
            path = base / path
        if path not in paths:
            paths.append(path)
    if len(paths) > MAX_PHOTOS:
        raise _Bad("images", f"{len(paths)} photos; the limit is {MAX_PHOTOS} a product")
    return paths


def check_boxes(boxes, size: tuple[int, int], *, slack: float = 1.0) -> None:
    """Every box inside an image of ``size`` (width, height), give or take ``slack`` pixels."""
    w, h = size
    for i, b in enumerate(boxes):
        if b[2] > w + slack or b[3] > h + slack:
            raise _Bad("boxes", f"box {i} {list(b[:4])} lies outside the {w}x{h} image")


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
            product = check_product(row, schema=schema, base=base, check_images=check_images)
        except _Bad as bad:
            report.add(line, str(row.get("id")) if row.get("id") is not None else None, bad.field, bad.reason)
            continue
        if product.id in seen:
            report.add(line, product.id, "id", f"duplicate id {product.id!r}")
            continue
        seen.add(product.id)
        report.good += 1
        yield dataclasses.replace(product, line=line)


def dumps_of(dumps: str | Path | Sequence[str | Path]) -> list[Path]:
    """One dump or several, as a list of paths."""
    if isinstance(dumps, str | Path):
        return [Path(dumps)]
    if not dumps:
        raise ValueError("no training dump given")
    return [Path(d) for d in dumps]
