"""The RAM index's snapshot: one .npz beside the store, so the daemon starts without re-reading it.

A snapshot of another format or schema is refused with a ``ValueError``; ``load_ram_index``
(``search.engine``) then rebuilds the RAM index from the store and writes a current snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from foundation.atomic import atomic_write
from foundation.schema import Schema, default_schema
from search.index import InvertedIndex

SNAPSHOT_FORMAT = 4  # 2: each shard keeps its products' photo keys; 3: and their prices; 4: photo numbers


def save_snapshot(index: InvertedIndex, path: str | Path) -> None:
    """Write ``index`` to ``path`` atomically: a crash leaves the old snapshot or the new one."""
    path = Path(path)
    arrays = {}
    meta = {
        "code_bytes": index.code_bytes,
        "colour_bins": index.colour_bins,
        "schema": index.schema.fingerprint,
        "categories": sorted(index._shards),
        "version": index.version,
        "format": SNAPSHOT_FORMAT,
    }
    for c, shard in index._shards.items():
        n = shard.index.ntotal
        arrays[f"{c}/codes"] = index._codes(shard).copy() if n else np.empty((0, index.code_bytes), np.uint8)
        arrays[f"{c}/colours"] = shard.colours
        arrays[f"{c}/values"] = shard.values
        arrays[f"{c}/ids"] = shard.ids
        arrays[f"{c}/photos"] = shard.photos
        arrays[f"{c}/prices"] = shard.prices
        arrays[f"{c}/numbers"] = shard.numbers
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def load_snapshot(path: str | Path, *, schema: Schema | None = None) -> InvertedIndex:
    schema = schema or default_schema()
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta.get("format", 1) != SNAPSHOT_FORMAT:
            raise ValueError(f"the index snapshot {path} is of format {meta.get('format', 1)}, not {SNAPSHOT_FORMAT}")
        if meta["schema"] != schema.fingerprint:
            raise ValueError(
                f"the index snapshot {path} was built with schema {meta['schema']}, this one is {schema.fingerprint}"
            )
        idx = InvertedIndex(code_bytes=meta["code_bytes"], colour_bins=meta["colour_bins"], schema=schema)
        idx.version = meta.get("version")
        for c in meta["categories"]:
            shard = idx._shard(c)
            shard.index.add(np.ascontiguousarray(z[f"{c}/codes"]))
            shard.ids = z[f"{c}/ids"]
            shard.colours = z[f"{c}/colours"]
            shard.values = z[f"{c}/values"]
            shard.photos = z[f"{c}/photos"]
            shard.prices = z[f"{c}/prices"]
            shard.numbers = z[f"{c}/numbers"]
    return idx
