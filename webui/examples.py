"""Example photos the page offers a shopper to try: a folder, read once at start-up.

The folder's ``examples.json`` lists them, in order: ``{"examples": [{"image": "outfit-1.jpg",
"categories": ["shirt", "pants"], "boxes": [[x0, y0, x1, y1, "shirt"], ...]}, ...]}`` (categories and
boxes optional: what the photo holds, for the page's labels and for tests). Without it, the folder's
JPEG, PNG and WebP files are the examples, by name. Only these are served, from memory: a request
names an example, never a path.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from foundation.atomic import atomic_write_text
from foundation.images import ImageError, image_size

logger = logging.getLogger(__name__)

MANIFEST = "examples.json"
MAX_EXAMPLES = 12  # a strip of thumbnails, not a gallery
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MIMETYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# one URL path segment, no dot first (no "..", no hidden file)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Example:
    """One example photo: its file name (the last segment of its URL), bytes and what it holds."""

    name: str
    data: bytes = field(repr=False)
    mimetype: str
    categories: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """What a screen reader says of its thumbnail, e.g. ``an example: shirt, pants and shoes``."""
        names = [c.replace("_", " ") for c in self.categories]
        if not names:
            return "an example photo"
        held = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        return f"an example: {held}"


def write_manifest(folder: str | Path, rows: list[dict]) -> Path:
    """Write ``examples.json`` listing ``rows`` (each ``image``, ``categories``, ``boxes``); written last
    and atomically, so its presence says the folder is complete."""
    lines = ",\n".join(f"  {json.dumps(row)}" for row in rows)  # an example a line: readable, and diffable
    return atomic_write_text(Path(folder) / MANIFEST, f'{{"examples": [\n{lines}\n]}}\n')


def load_examples(folder: str | Path, *, max_bytes: int | None = None) -> dict[str, Example]:
    """The examples of ``folder`` by name, in order (at most ``MAX_EXAMPLES``).

    Raises:
        FileNotFoundError: no such folder, or a listed file is missing.
        ValueError: a listed name is not a plain image file name, a file is no JPEG, PNG or WebP
            image, or is larger than ``max_bytes`` (an example is searched as an upload).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no examples folder at {folder}")
    rows = _rows(folder)
    if len(rows) > MAX_EXAMPLES:
        logger.warning("%s lists %d examples; the page shows the first %d", folder, len(rows), MAX_EXAMPLES)
        rows = rows[:MAX_EXAMPLES]
    examples = [_example(folder, name, categories, max_bytes) for name, categories in rows]
    if not examples:
        logger.warning("no example photos in %s", folder)
    return {e.name: e for e in examples}


def _rows(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return [(p.name, ()) for p in sorted(folder.iterdir()) if p.suffix.lower() in SUFFIXES and p.is_file()]
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))["examples"]
        rows = [(str(row["image"]), tuple(str(c) for c in row.get("categories", ()))) for row in listed]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f'{manifest} is not a list of examples ({{"examples": [{{"image": NAME, ...}}]}}): {exc!r}'
        ) from None
    names = [name for name, _ in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"{manifest} lists an image twice")
    return rows


def _example(folder: Path, name: str, categories: tuple[str, ...], max_bytes: int | None) -> Example:
    if not _NAME.fullmatch(name) or Path(name).suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"example {name!r} in {folder}: an example is a file of the folder named with letters, digits, "
            f"'.', '_' and '-' (not starting with '.'), ending in {', '.join(SUFFIXES)}"
        )
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"no example photo {path}")
    data = path.read_bytes()
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"the example {path} ({len(data):,} bytes) is larger than the upload limit ({max_bytes:,})")
    try:
        image_size(data)
        with Image.open(io.BytesIO(data)) as im:
            kind = im.format
    except (ImageError, OSError) as exc:
        raise ValueError(f"the example {path} is not a photo: {exc}") from None
    if kind not in MIMETYPES:
        raise ValueError(f"the example {path} is a {kind} image; examples are JPEG, PNG or WebP")
    return Example(name, data, MIMETYPES[kind], categories)
