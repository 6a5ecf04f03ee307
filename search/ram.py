"""The RAM index of an index directory: from its snapshot when current, else built from the store."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from foundation.schema import Schema, default_schema
from search.index import InvertedIndex
from search.rows import PhotoRows, photo_key

logger = logging.getLogger(__name__)

SNAPSHOT = "ram.npz"
BATCH = 10_000


def photo_rows(records: Iterable) -> PhotoRows:
    """Store records as index rows: a row for each of a product's photos."""
    rows = [(r, n, photo) for r in records for n, photo in enumerate(r.photos)]
    return PhotoRows(
        [r.id for r, _n, _p in rows],
        [p.description.category for _r, _n, p in rows],
        [{g: v for g, (v, _p) in p.description.attributes.items()} for _r, _n, p in rows],
        np.stack([p.description.code for _r, _n, p in rows]) if rows else np.empty((0, 0), np.uint8),
        np.stack([p.description.colour for _r, _n, p in rows]) if rows else np.empty((0, 0), np.float32),
        [photo_key(p.image_hash) for _r, _n, p in rows],
        [r.price for r, _n, _p in rows],
        [n for _r, n, _p in rows],
    )


def index_rows(ram: InvertedIndex, records: Iterable) -> None:
    """Add store records to the RAM index."""
    rows = photo_rows(records)
    if len(rows):
        ram.add(rows)


def ram_from_store(store, *, schema: Schema | None = None) -> InvertedIndex:
    """A new RAM index of every record of an open store, from one read snapshot of it."""
    info = store.info()
    ram = InvertedIndex(
        code_bytes=info["code_bytes"],
        colour_bins=info["colour_bins"],
        schema=schema or default_schema(),
    )
    version, batch = store.version(), []
    for record in store.iter_records():
        batch.append(record)
        if len(batch) >= BATCH:
            index_rows(ram, batch)
            batch.clear()
    index_rows(ram, batch)
    ram.version = version
    return ram


def load_ram_index(
    index_dir: str | Path,
    *,
    use_snapshot: bool = True,
    schema: Schema | None = None,
) -> InvertedIndex:
    """The RAM index of an index directory: from its snapshot when current, else from the store
    (opened and closed here: LMDB opens an environment once a process)."""
    from indexer.store import Store

    index_dir = Path(index_dir)
    schema = schema or default_schema()
    store = Store(index_dir, readonly=True)
    try:
        snap = index_dir / SNAPSHOT
        version = store.version()
        if use_snapshot and snap.is_file():
            try:
                ram = InvertedIndex.load(snap, schema=schema)
                if ram.version == version:
                    return ram
                logger.info("the RAM snapshot is older than the store: rebuilding it")
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("ignoring unreadable RAM snapshot %s: %s", snap, exc)
        ram = ram_from_store(store, schema=schema)
    finally:
        store.close()
    if use_snapshot:
        try:
            ram.save(index_dir / SNAPSHOT)
        except OSError as exc:  # a read-only index directory still serves
            logger.warning("cannot write the RAM snapshot: %s", exc)
    return ram
