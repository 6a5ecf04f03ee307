"""``fashion-search export milvus``: a Milvus collection written from an index directory's store.

The collection's fields are described in ``search.milvus``; the code size and colour bins come from
the index's ``index.json`` (the models' real code size), and are recorded in the collection's
description with the schema's fingerprint, so a server refuses a collection of another schema.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from foundation.schema import Schema, default_schema
from search.milvus import (
    COLLECTION,
    CONSISTENCY,
    FIXED_FIELDS,
    FORMAT,
    INDEX_TYPES,
    check_collection_name,
    connect,
    load_pymilvus,
)
from search.milvus_rows import insert_rows, product_rows
from search.ram import photo_rows


def collection_schema(*, code_bits: int, colour_bins: int, schema: Schema, description: str):
    """The collection's fields for codes of ``code_bits`` and histograms of ``colour_bins``."""
    pm = load_pymilvus()
    f, t = pm.FieldSchema, pm.DataType
    groups = [g.name for g in schema.attribute_groups]
    clash = sorted(set(groups) & set(FIXED_FIELDS))
    if clash:
        raise ValueError(f"attribute groups {clash} clash with the collection's own fields {FIXED_FIELDS}")
    longest = max((len(v.encode()) for g in schema.attribute_groups for v in g.values), default=1)
    fields = [
        f("id", t.VARCHAR, is_primary=True, max_length=512),
        f("category", t.VARCHAR, max_length=256, is_partition_key=True),
        f("code", t.BINARY_VECTOR, dim=code_bits),
        f("colour_histogram", t.ARRAY, element_type=t.FLOAT, max_capacity=colour_bins),
        f("photo", t.INT64),
        f("price", t.FLOAT),  # NaN: unknown, outside every price range
        f("title", t.VARCHAR, max_length=4096),
        f("category_path", t.VARCHAR, max_length=4096),
        f("url", t.VARCHAR, max_length=65535),
        *[f(g, t.VARCHAR, max_length=4 * longest) for g in groups],
    ]
    return pm.CollectionSchema(fields, description=description)


@dataclass(frozen=True)
class CollectionSpec:
    """A collection for codes of ``code_bits`` and histograms of ``colour_bins``."""

    code_bits: int
    colour_bins: int
    collection: str = COLLECTION
    index_type: str = "BIN_FLAT"
    store_version: int | None = None  # of the store it is written from


@dataclass(frozen=True)
class ExportSettings:
    """How ``export_store`` writes: the collection's name and index (``nlist`` clusters for
    ``BIN_IVF_FLAT``), whether it replaces one of the same name, and the products a batch."""

    collection: str = COLLECTION
    index_type: str = "BIN_FLAT"
    nlist: int = 1024
    replace: bool = False
    batch_size: int = 2000


def create_collection(uri: str, spec: CollectionSpec, *, schema: Schema | None = None, replace: bool = False):
    """A new, empty collection as ``spec`` says; ``replace`` drops a collection of the same name first
    (without it, one is an error)."""
    code_bits, colour_bins, collection, index_type = spec.code_bits, spec.colour_bins, spec.collection, spec.index_type
    if index_type not in INDEX_TYPES:
        raise ValueError(f"--index-type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    if code_bits < 8 or code_bits % 8:
        raise ValueError(f"code_bits must be a positive multiple of 8, got {code_bits}")
    pm = load_pymilvus()
    schema = schema or default_schema()
    check_collection_name(collection)
    alias = connect(uri)
    if pm.utility.has_collection(collection, using=alias):
        if not replace:
            raise FileExistsError(f"Milvus at {uri} already has a collection {collection!r}: --replace drops it")
        pm.utility.drop_collection(collection, using=alias)
    described = {
        "format": FORMAT,
        "code_bits": code_bits,
        "colour_bins": colour_bins,
        "schema": schema.fingerprint,
        "store_version": spec.store_version,
        "index_type": index_type,
    }
    fields = collection_schema(
        code_bits=code_bits, colour_bins=colour_bins, schema=schema, description=json.dumps(described)
    )
    return pm.Collection(collection, fields, using=alias, consistency_level=CONSISTENCY)


def build_vector_index(target, *, index_type: str = "BIN_FLAT", nlist: int = 1024) -> None:
    """Seal what was inserted, index the codes (waiting until it is built) and load the collection."""
    if nlist < 1:
        raise ValueError(f"nlist must be at least 1, got {nlist}")
    target.flush()
    params = {"nlist": nlist} if index_type == "BIN_IVF_FLAT" else {}
    target.create_index("code", {"index_type": index_type, "metric_type": "HAMMING", "params": params})
    load_pymilvus().utility.wait_for_index_building_complete(target.name, using=target._using)
    target.load()


def export_store(index_dir, uri: str, settings: ExportSettings | None = None, *, progress: bool = True) -> dict:
    """Load the store of ``index_dir`` into a new Milvus collection; returns what was written."""
    import time

    from tqdm import tqdm

    from indexer.store import Store

    settings = settings or ExportSettings()
    collection, index_type, batch_size = settings.collection, settings.index_type, settings.batch_size
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    schema = default_schema()
    t0 = time.perf_counter()
    with Store(index_dir, readonly=True) as store:
        info = store.info()
        if info.get("schema_fingerprint", schema.fingerprint) != schema.fingerprint:
            raise ValueError(f"the index {index_dir} was built with schema {info['schema_fingerprint']}")
        spec = CollectionSpec(
            code_bits=int(info.get("code_bits") or info["code_bytes"] * 8),  # the models' real size, not 1856
            colour_bins=int(info["colour_bins"]),
            collection=collection,
            index_type=index_type,
            store_version=info["version"],
        )
        target = create_collection(uri, spec, schema=schema, replace=settings.replace)
        groups = [g.name for g in schema.attribute_groups]
        n = 0
        records = store.iter_records()
        with tqdm(total=info["products"], desc="export", unit="product", disable=not progress) as bar:
            while batch := list(itertools.islice(records, batch_size)):
                display = [r.metadata() for r in batch for _p in r.photos]  # a row a photo
                insert_rows(target, product_rows(photo_rows(batch), display, groups))
                n += len(batch)
                bar.update(len(batch))
    build_vector_index(target, index_type=index_type, nlist=settings.nlist)
    seconds = time.perf_counter() - t0
    return {"products": n, "collection": collection, "index_type": index_type, "seconds": round(seconds, 2)}


__all__ = [
    "CollectionSpec",
    "ExportSettings",
    "build_vector_index",
    "collection_schema",
    "create_collection",
    "export_store",
]
