"""The bulk indexer: dump -> decode (parallel workers) -> describe (batched) -> LMDB store.

Reader, decoder, describer and writer are separate stages; the runner (:func:`build_index`)
takes an optional ``describer`` so that tests pass small fakes.

Restart-safety: every batch is written in one LMDB transaction, and a product whose id and
content hash (``indexer.prepare.content_hash``: every photo's bytes, the product's fields and the
models' signature) are already in the store is skipped without decoding. A run killed at any
moment and started again with the same command therefore resumes where its last commit left off
and ends with every good product exactly once; a changed dump adds new and updates changed
products, and ``delete_missing`` removes products that are no longer in it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from foundation import modelfiles
from foundation.atomic import atomic_copy, atomic_write_text
from foundation.dump import DumpReport, Product, ProductError, check_boxes, read_dump
from foundation.images import ImageError
from foundation.schema import Schema, default_schema
from indexer.describe import MODEL_NAMES, DescribedPhoto, describe_items, models_signature
from indexer.prepare import ImageLimits, Prepared, bytes_hash, content_hash, prepare_image
from indexer.products import product_fields, product_item, product_record, stored_photo
from indexer.store import MODELS_DIR, REPORT_JSON, Store

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class BulkConfig:
    workers: int = 2
    batch_size: int = 32
    limits: ImageLimits = ImageLimits()  # noqa: B008 - frozen
    device: str = "cpu"
    delete_missing: bool = False

    def __post_init__(self):
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class Decoded:
    """What a decode worker hands back for one product."""

    product: Product
    content_hash: str
    image_hash: str = ""  # the first photo's
    photos: list[Prepared] = dataclasses.field(default_factory=list)  # its usable photos, each once
    images: list[str] = dataclasses.field(default_factory=list)  # their paths
    error: str | None = None  # no usable photo: why not (the first photo's problem)
    field: str = "image"  # the dump field the error is about
    blank: bool = False
    unchanged: bool = False
    decode_s: float = 0.0
    photo_problems: list[dict] = dataclasses.field(default_factory=list)  # photos left out of a product kept

    @property
    def prepared(self) -> Prepared | None:
        return self.photos[0] if self.photos else None


def _read_photos(product: Product) -> tuple[list[tuple[int, str, bytes, str]], list[dict]]:
    """(number, path, bytes, hash) of each readable photo, identical bytes once; and what was left out."""
    photos, problems, seen = [], [], {}
    for n, photo in enumerate(product.photos):
        path = photo.path
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            problems.append({"photo": n, "image": str(path), "reason": f"cannot read the image: {exc.strerror or exc}"})
            continue
        h = bytes_hash(data)
        if h in seen:
            problems.append(
                {"photo": n, "image": str(path), "reason": f"the same bytes as photo {seen[h]}: stored once"}
            )
            continue
        seen[h] = n
        photos.append((n, str(path), data, h))
    return photos, problems


def _decode(job: tuple[Product, str | None, str, ImageLimits]) -> Decoded:
    """Worker: read every photo's bytes, hash, and (unless unchanged) prepare each: decode, orient,
    shrink, check, thumbnail. A product keeps the photos that can be used."""
    product, old_hash, signature, limits = job
    t0 = time.perf_counter()
    readable, problems = _read_photos(product)
    if not readable:
        return Decoded(product, "", error=problems[0]["reason"], photo_problems=problems)
    chash = content_hash([h for *_, h in readable], product_fields(product), signature)
    out = Decoded(product, chash, readable[0][3], photo_problems=problems)
    if chash == old_hash:
        out.unchanged, out.decode_s = True, time.perf_counter() - t0
        return out
    first_error = None
    for i, (n, path, data, _h) in enumerate(readable):
        try:
            prepared = prepare_image(data, limits=limits)
            if i == 0:
                check_boxes(product.boxes, prepared.original_size)
        except (ImageError, ProductError) as exc:
            reason = exc.reason if isinstance(exc, ProductError) else str(exc)
            if first_error is None:
                blank = isinstance(exc, ImageError) and reason.startswith("blank")
                first_error = (reason, exc.field if isinstance(exc, ProductError) else "image", blank)
            problems.append({"photo": n, "image": path, "reason": reason})
            continue
        out.photos.append(prepared)
        out.images.append(path)
    if not out.photos:
        out.error, out.field, out.blank = first_error
    out.decode_s = time.perf_counter() - t0
    return out


def _describe_batch(describer, batch: list[Decoded], skip) -> list[tuple[Decoded, list[DescribedPhoto]]]:
    """Describe a batch (every photo of each product); when it fails, one product at a time, so one
    bad product is reported and skipped."""

    def describe(products: list[Decoded]) -> list[tuple[Decoded, list[DescribedPhoto]]]:
        items = [product_item(d.product, p) for d in products for p in d.photos]
        described = iter(describe_items(describer, items))
        return [(d, [next(described) for _ in d.photos]) for d in products]

    try:
        return describe(batch)
    except Exception:  # noqa: BLE001 - any failure: find the product behind it, keep the rest
        logger.warning("a batch of %d failed to describe; describing its products one by one", len(batch))
    out = []
    for d in batch:
        try:
            out.extend(describe([d]))
        except Exception as exc:  # noqa: BLE001
            skip(d, f"cannot describe: {exc.__class__.__name__}: {str(exc)[:200]}", "image")
    return out


def _copy_models(models_dir: Path, dest: Path) -> None:
    """Copy the model files into the index (atomically per file), so the index is self-sufficient."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*[f"{m}.pt" for m in MODEL_NAMES], modelfiles.MANIFEST):
        src = models_dir / name
        if not src.is_file():
            continue
        target = dest / name
        if (
            target.is_file()
            and target.stat().st_size == src.stat().st_size
            and modelfiles.file_hash(target) == modelfiles.file_hash(src)
        ):
            continue
        atomic_copy(src, target)


def _count_rows(dump: Path) -> int:
    with dump.open("rb") as fh:
        n = sum(1 for line in fh if line.strip())
    return n - 1 if dump.suffix.lower() == ".csv" else n


def _worker_init() -> None:
    """Die with the parent: a SIGKILLed indexer must not leave decode workers behind (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _decoded_stream(jobs: Iterator, workers: int) -> Iterator[Decoded]:
    if workers == 0:
        yield from map(_decode, jobs)
        return
    # fork: the workers use only PIL and hashlib, never torch; spawn would re-run the caller's script
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_decode, jobs, chunksize=4)


def build_index(
    dump: str | Path,
    models_dir: str | Path,
    out_dir: str | Path,
    *,
    workers: int = 2,
    batch_size: int = 32,
    device: str = "cpu",
    delete_missing: bool = False,
    progress: bool = True,
    describer=None,
    schema: Schema | None = None,
    limits: ImageLimits | None = None,
    on_batch: Callable[[dict], None] | None = None,
    decoded_stream: Callable | None = None,
    describe_batch: Callable | None = None,
) -> dict:
    """Index (or update) ``dump`` into the index directory ``out_dir``; returns the summary.

    Args:
        dump: a product dump (JSON Lines or CSV).
        models_dir: the trained models (attributes.pt, detector.pt, appearance.pt); copied into
            ``out_dir/models``.
        workers: decode processes (0: decode in this process).
        describer: a ready :class:`indexer.describe.Describer` (tests); default: loaded from the
            models.
        on_batch: called with the running summary after each committed batch.
        decoded_stream, describe_batch: stand-ins for ``_decoded_stream`` and ``_describe_batch``, with
            their arguments (``indexer.ray_bulk`` runs both on Ray Data).
    """
    cfg = BulkConfig(
        workers=workers,
        batch_size=batch_size,
        limits=limits or ImageLimits(),
        device=device,
        delete_missing=delete_missing,
    )
    dump, models_dir, out_dir = Path(dump), Path(models_dir), Path(out_dir)
    if not dump.is_file():
        raise FileNotFoundError(f"no product dump at {dump}")
    if not models_dir.is_dir():
        raise FileNotFoundError(
            f"no models directory at {models_dir}: train the models first (`fashion-search train ...`)"
        )
    schema = schema or default_schema()
    t_start = time.perf_counter()
    if describer is None:
        import torch

        from indexer.describe import Describer

        torch.set_num_threads(min(2, torch.get_num_threads()))
        describer = Describer.load(models_dir, device=cfg.device, schema=schema)
    if not describer.signature:  # a describer built in memory: sign with the models it stands for
        describer.signature = models_signature(models_dir)
    signature = describer.signature
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_models(models_dir, out_dir / MODELS_DIR)
    store = Store(out_dir, readonly=False, reindex=True)  # one of an older format: emptied, indexed again
    store.write_info(
        {
            "code_bytes": int(describer.code_bytes),
            "code_bits": int(describer.code_bytes) * 8,
            "colour_bins": int(describer.colour.bins),
            "colour": describer.colour.to_dict(),
            "models_dir": MODELS_DIR,
            "models": modelfiles.read_manifest(models_dir).get("models", {}),
            "models_signature": signature,
            "dump": str(dump.resolve()),
            "schema_fingerprint": schema.fingerprint,
            "thumb_size": cfg.limits.thumb_size,
            "working_side": cfg.limits.working_side,
        }
    )
    old = store.hashes()
    report = DumpReport()
    skipped: list[dict] = []
    duplicates: list[dict] = []
    photos_left_out: list[dict] = []
    first_of_bytes: dict[str, str] = {}
    good_ids: set[str] = set()
    stages = dict.fromkeys(("decode", "attributes", "detector", "appearance", "colour", "write"), 0.0)
    counts = dict.fromkeys(
        ("indexed", "photos", "added", "updated", "unchanged", "skipped", "blank", "duplicates", "photos_left_out"), 0
    )
    batch: list[Decoded] = []

    def skip(d: Decoded, reason: str, field: str = "image") -> None:
        counts["skipped"] += 1
        skipped.append(
            {
                "line": d.product.line,
                "id": d.product.id,
                "field": field,
                "reason": reason,
                "image": str(d.product.photos[0].path),
            }
        )
        logger.warning("skipping %s (line %d): %s", d.product.id, d.product.line, reason)

    def flush() -> None:
        if not batch:
            return
        described = (describe_batch or _describe_batch)(describer, batch, skip)
        records, thumbs = [], {}
        for d, outs in described:
            for out in outs:
                for k in ("attributes", "detector", "appearance", "colour"):
                    stages[k] += out.description.timings_ms.get(k, 0.0) / 1e3
            photos = [stored_photo(image, out) for image, out in zip(d.images, outs)]
            records.append(product_record(d.product, photos, d.content_hash))
            thumbs[d.product.id] = [out.prepared.thumbnail for out in outs]
            counts["updated" if d.product.id in old else "added"] += 1
            counts["photos"] += len(outs)
        t0 = time.perf_counter()
        store.put(records, thumbs)
        stages["write"] += time.perf_counter() - t0
        counts["indexed"] += len(records)
        batch.clear()
        if on_batch:
            on_batch(dict(counts))

    def jobs():
        for p in read_dump(dump, schema=schema, report=report, check_images=False):
            yield p, old.get(p.id), signature, cfg.limits

    total = _count_rows(dump)
    bar = tqdm(total=total, desc="index", unit="product", disable=not progress, smoothing=0.05)
    running = {"state": "running", "pid": os.getpid(), "dump": str(dump), "started": time.time(), "rows": total}
    last_said, read = 0.0, 0

    def say(state: dict, *, every_s: float = 0.0) -> None:
        """progress.json, for a server serving this index (at most every ``every_s`` seconds)."""
        nonlocal last_said
        if time.monotonic() - last_said >= every_s:
            last_said = time.monotonic()
            store.write_progress({**running, **state, "done": read, **counts, "at": time.time()})

    say({})
    try:
        for d in (decoded_stream or _decoded_stream)(jobs(), cfg.workers):
            stages["decode"] += d.decode_s
            bar.update(1)
            read += 1
            say({}, every_s=PROGRESS_EVERY_S)
            for problem in d.photo_problems if d.photos or d.unchanged else []:
                counts["photos_left_out"] += 1
                photos_left_out.append({"line": d.product.line, "id": d.product.id, **problem})
            if d.error and not d.blank:
                skip(d, d.error, d.field)
                continue
            if d.image_hash in first_of_bytes:
                counts["duplicates"] += 1
                duplicates.append(
                    {
                        "id": d.product.id,
                        "same_image_as": first_of_bytes[d.image_hash],
                        "image": str(d.product.photos[0].path),
                    }
                )
            else:
                first_of_bytes[d.image_hash] = d.product.id
            if d.blank:
                counts["blank"] += 1
                skip(d, d.error or "blank or placeholder image")
                continue
            good_ids.add(d.product.id)
            if d.unchanged:
                counts["unchanged"] += 1
                continue
            batch.append(d)
            if sum(len(b.photos) for b in batch) >= cfg.batch_size:
                flush()
                bar.set_postfix(indexed=counts["indexed"], skipped=counts["skipped"] + len(report.problems))
        flush()
        bar.update(max(0, total - bar.n))  # rows the reader rejected never reach a worker
        read = report.rows
        deleted = 0
        if cfg.delete_missing:
            gone = [pid for pid in old if pid not in good_ids]
            deleted = store.delete(gone) if gone else 0
    except BaseException as exc:
        say({"state": "failed", "error": f"{exc.__class__.__name__}: {str(exc)[:300]}"})
        store.close()
        raise
    finally:
        bar.close()
    built = store.mark_built()  # what a running server waits for before it loads the new index
    wall = time.perf_counter() - t_start
    products = len(store)
    summary = {
        **counts,
        "rows": report.rows,
        "bad_rows": len(report.problems),
        "deleted": deleted,
        "products": products,
        "seconds": round(wall, 2),
        "images_per_s": round(counts["photos"] / wall, 2) if wall > 0 else None,
        "products_per_s": round(counts["indexed"] / wall, 2) if wall > 0 else None,
        "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
        "stage_share": {k: round(v / max(sum(stages.values()), 1e-9), 3) for k, v in stages.items()},
        "store_bytes": store.bytes_on_disk(),
        "store_bytes_per_product": round(store.bytes_on_disk() / products) if products else None,
    }
    full_report = {
        "dump": str(dump),
        "summary": summary,
        "skipped": [{"line": p.line, "id": p.id, "field": p.field, "reason": p.reason} for p in report.problems]
        + skipped,
        "duplicates": duplicates,
        "photos_left_out": photos_left_out,
    }
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(full_report, indent=1) + "\n")
    say({"state": "done", "built": built, "finished": time.time(), "seconds": summary["seconds"]})
    store.close()
    logger.info(
        "indexed %d products (%d unchanged, %d skipped, %d bad rows) in %.1fs",
        counts["indexed"],
        counts["unchanged"],
        counts["skipped"],
        len(report.problems),
        wall,
    )
    return summary


__all__ = ["BulkConfig", "build_index"]
