"""The bulk indexer's stages, read -> decode -> describe -> write: public functions that the local
runner (``indexer.bulk.build_index``) and Ray Data (``indexer.ray_bulk``) run alike.

- :func:`read`: the dump's good products, each a :class:`DecodeJob` that says what the store holds
  of it (the dump's bad rows go to the reader's report);
- :func:`decode`: one product's photos read, hashed and, unless the product is unchanged, prepared
  (decoded, oriented, shrunk, checked, thumbnailed); torch-free, so that it runs in worker
  processes (:func:`decode_all`) or Ray tasks;
- :func:`describe`: a batch of decoded products through ``describe_items``, every photo of each;
  when the batch fails, one product at a time, so one bad product is skipped and the rest kept;
- :func:`write`: a described batch as records and thumbnails, in one store transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from foundation.dump import DumpReport, Product, ProductError, check_boxes, read_dump
from foundation.images import ImageError
from foundation.schema import Schema
from indexer.describe import DescribedPhoto, Describer, describe_items
from indexer.prepare import ImageLimits, Prepared, bytes_hash, content_hash, prepare_image
from indexer.products import product_fields, product_item, product_record, stored_photo
from indexer.store import ProductRecord, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSettings:
    """What every decode job of a run shares."""

    signature: str  # the models': part of every content hash
    limits: ImageLimits
    stored: Mapping[str, str]  # id -> content hash of each product the store holds


@dataclass(frozen=True)
class DecodeJob:
    """One product to decode, with the content hash the store holds of it (None: a new product)."""

    product: Product
    stored_hash: str | None
    signature: str
    limits: ImageLimits


@dataclass
class DecodedPhoto:
    """A photo of a product, ready for the models."""

    path: str  # as the dump gave it
    prepared: Prepared | None  # None only where a Ray decode task answers how many photos there are


@dataclass
class Decoded:
    """What :func:`decode` hands back for one product."""

    product: Product
    content_hash: str
    image_hash: str = ""  # the first readable photo's: a product whose first photo another has is a duplicate
    photos: list[DecodedPhoto] = dataclasses.field(default_factory=list)  # its usable photos, each once
    error: str | None = None  # no usable photo: why not (the first photo's problem)
    field: str = "image"  # the dump field the error is about
    blank: bool = False
    unchanged: bool = False
    decode_s: float = 0.0
    photo_problems: list[dict] = dataclasses.field(default_factory=list)  # photos left out of a product kept
    described: list[DescribedPhoto] | None = None  # described where it was decoded (``indexer.parallel``)
    describe_error: str | None = None  # why that failed


DescribedProduct = tuple[Decoded, list[DescribedPhoto]]
Skip = Callable[..., None]  # skip(decoded, reason, field="image"): a product reported and left out


def read(dump: Path, schema: Schema, report: DumpReport, settings: DecodeSettings) -> Iterator[DecodeJob]:
    """The reader: a job for each good product of ``dump``, in its order; bad rows go to ``report``.
    The photos are not opened here (the decode stage does that, in parallel)."""
    for product in read_dump(dump, schema=schema, report=report, check_images=False):
        yield DecodeJob(product, settings.stored.get(product.id), settings.signature, settings.limits)


def _read_photos(product: Product) -> tuple[list[tuple[int, str, bytes, str]], list[dict]]:
    """(number, path, bytes, hash) of each readable photo, identical bytes once; and what was left out."""
    photos, problems, seen = [], [], {}
    for n, photo in enumerate(product.photos):
        path = str(photo.path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            problems.append({"photo": n, "image": path, "reason": f"cannot read the image: {exc.strerror or exc}"})
            continue
        h = bytes_hash(data)
        if h in seen:
            problems.append({"photo": n, "image": path, "reason": f"the same bytes as photo {seen[h]}: stored once"})
            continue
        seen[h] = n
        photos.append((n, path, data, h))
    return photos, problems


def decode(job: DecodeJob) -> Decoded:
    """Read every photo's bytes, hash them, and (unless the product is unchanged) prepare each. A
    product keeps the photos that can be used."""
    product = job.product
    t0 = time.perf_counter()
    readable, problems = _read_photos(product)
    if not readable:
        return Decoded(product, "", error=problems[0]["reason"], photo_problems=problems)
    chash = content_hash([h for *_, h in readable], product_fields(product), job.signature)
    out = Decoded(product, chash, readable[0][3], photo_problems=problems)
    if chash == job.stored_hash:
        out.unchanged, out.decode_s = True, time.perf_counter() - t0
        return out
    first_error = None
    for i, (n, path, data, _h) in enumerate(readable):
        try:
            prepared = prepare_image(data, limits=job.limits)
            if i == 0:
                check_boxes(product.boxes, prepared.original_size)
        except (ImageError, ProductError) as exc:
            reason = exc.reason if isinstance(exc, ProductError) else str(exc)
            if first_error is None:
                blank = isinstance(exc, ImageError) and reason.startswith("blank")
                first_error = (reason, exc.field if isinstance(exc, ProductError) else "image", blank)
            problems.append({"photo": n, "image": path, "reason": reason})
            continue
        out.photos.append(DecodedPhoto(path, prepared))
    if not out.photos:
        out.error, out.field, out.blank = first_error
    out.decode_s = time.perf_counter() - t0
    return out


def die_with_parent() -> None:
    """Die with the parent: a SIGKILLed indexer must not leave decode workers behind (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def decode_all(jobs: Iterable[DecodeJob], workers: int) -> Iterator[Decoded]:
    """:func:`decode` each job, in order: in ``workers`` processes, or in this one with 0."""
    if workers == 0:
        yield from map(decode, jobs)
        return
    # fork: the workers use only PIL and hashlib, never torch; spawn would re-run the caller's script
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=die_with_parent) as pool:
        yield from pool.imap(decode, jobs, chunksize=4)


def describe(describer: Describer, batch: list[Decoded], skip: Skip) -> list[DescribedProduct]:
    """Describe a batch (every photo of each product); when it fails, one product at a time, so one
    bad product is reported (``skip``) and left out."""

    def each(products: list[Decoded]) -> list[DescribedProduct]:
        items = [product_item(d.product, p.prepared) for d in products for p in d.photos]
        described = iter(describe_items(describer, items))
        return [(d, [next(described) for _ in d.photos]) for d in products]

    try:
        return each(batch)
    except Exception:  # noqa: BLE001 - any failure: find the product behind it, keep the rest
        logger.warning("a batch of %d failed to describe; describing its products one by one", len(batch))
    out = []
    for d in batch:
        try:
            out.extend(each([d]))
        except Exception as exc:  # noqa: BLE001
            skip(d, f"cannot describe: {exc.__class__.__name__}: {str(exc)[:200]}", "image")
    return out


def write(store: Store, described: list[DescribedProduct]) -> list[ProductRecord]:
    """The writer: each described product as a record (its photos in order) and its thumbnails, all
    in one store transaction."""
    records, thumbs = [], {}
    for d, photos in described:
        stored = [stored_photo(p.path, x) for p, x in zip(d.photos, photos)]
        records.append(product_record(d.product, stored, d.content_hash))
        thumbs[d.product.id] = [x.prepared.thumbnail for x in photos]
    store.put(records, thumbs)
    return records


__all__ = [
    "DecodeJob",
    "DecodeSettings",
    "Decoded",
    "DecodedPhoto",
    "DescribedProduct",
    "decode",
    "decode_all",
    "die_with_parent",
    "describe",
    "read",
    "write",
]
