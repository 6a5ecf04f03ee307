"""Rows of the Milvus collection: their keys (a row a photo) and their fields, written as columns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from foundation.dump import MAX_PHOTOS
from search.rows import PhotoRows


def row_key(product_id: str, number: int = 0) -> str:
    """A photo's row key: the id for the first photo, ``id/n`` for the others."""
    return product_id if not number else f"{product_id}/{number}"


def split_key(key: str) -> tuple[str, int]:
    product_id, _, number = key.partition("/")
    return product_id, int(number or 0)


def row_keys(ids: Sequence[str]) -> list[str]:
    """Every key a photo of these products may have."""
    return [row_key(i, n) for i in ids for n in range(MAX_PHOTOS)]


def code_bytes_of(value) -> bytes:
    """A BINARY_VECTOR as pymilvus hands it back (bytes, or a one-element list of bytes)."""
    return value[0] if isinstance(value, list) else bytes(value)


def insert_rows(collection, rows: list[dict]) -> None:
    """Insert rows as columns, in the collection's field order: ten times faster than pymilvus' rows."""
    collection.insert([[r[f.name] for r in rows] for f in collection.schema.fields])


def product_rows(rows: PhotoRows, display: Sequence[dict], groups: Sequence[str]) -> list[dict]:
    """Collection rows of photos, keyed by ``row_key``; ``display``: each photo's product's title,
    category_path and url, when known."""
    out = []
    for i, pid in enumerate(rows.ids):
        shown = display[i]
        price = rows.prices[i]
        out.append(
            {
                "id": row_key(pid, int(rows.numbers[i])),
                "category": rows.categories[i],
                "code": rows.codes[i].tobytes(),
                "colour_histogram": np.asarray(rows.colours[i], np.float32).tolist(),
                "photo": int(np.array([rows.photos[i]], np.uint64).view(np.int64)[0]),
                "price": float("nan") if np.isnan(price) else float(price),
                "title": shown.get("title") or "",
                "category_path": shown.get("category_path") or "",
                "url": shown.get("url") or "",
                **{g: rows.attributes[i].get(g, "") for g in groups},
            }
        )
    return out
