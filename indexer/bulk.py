"""The bulk indexer: dump -> decode (parallel workers) -> describe (batched) -> LMDB store.

Reader, decoder, describer and writer are separate stages; the runner (:func:`build_index`)
takes an optional ``describer`` so that tests pass small fakes.

Restart-safety: every batch is written in one LMDB transaction, and a product whose id and
content hash (``indexer.prepare.content_hash``: image bytes, the product's fields and the models'
signature) are already in
the store is skipped without decoding. A run killed at any moment and started again with the
same command therefore resumes where its last commit left off and ends with every good product
exactly once; a changed dump adds new and updates changed products, and ``delete_missing``
removes products that are no longer in it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
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
from indexer.describe import MODEL_NAMES, Described, describe_items, models_signature
from indexer.prepare import ImageLimits, Prepared, bytes_hash, content_hash, prepare_image
from indexer.products import product_fields, product_item, product_record
from indexer.store import MODELS_DIR, REPORT_JSON, Store

logger = logging.getLogger(__name__)


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
    image_hash: str = ""
    prepared: Prepared | None = None
    error: str | None = None
    field: str = "image"  # the dump field the error is about
    blank: bool = False
    unchanged: bool = False
    decode_s: float = 0.0


def _decode(job: tuple[Product, str | None, str, ImageLimits]) -> Decoded:
    """Worker: read bytes, hash, and (unless unchanged) prepare: decode, orient, shrink, check, thumbnail."""
    product, old_hash, signature, limits = job
    t0 = time.perf_counter()
    try:
        data = Path(product.image).read_bytes()
    except OSError as exc:
        return Decoded(product, "", error=f"cannot read the image: {exc.strerror or exc}")
    ihash = bytes_hash(data)
    chash = content_hash(ihash, product_fields(product), signature)
    if chash == old_hash:
        return Decoded(product, chash, ihash, unchanged=True, decode_s=time.perf_counter() - t0)
    try:
        prepared = prepare_image(data, limits=limits)
        check_boxes(product.boxes, prepared.original_size)
    except ImageError as exc:
        blank = str(exc).startswith("blank")
        return Decoded(product, chash, ihash, error=str(exc), blank=blank, decode_s=time.perf_counter() - t0)
    except ProductError as exc:
        return Decoded(product, chash, ihash, error=exc.reason, field=exc.field, decode_s=time.perf_counter() - t0)
    return Decoded(product, chash, ihash, prepared=prepared, decode_s=time.perf_counter() - t0)


def _describe_batch(describer, batch: list[Decoded], skip) -> list[tuple[Decoded, Described]]:
    """Describe a batch; when it fails, one product at a time, so one bad product is reported and skipped."""
    items = [product_item(d.product, d.prepared) for d in batch]
    try:
        return list(zip(batch, describe_items(describer, items)))
    except Exception:  # noqa: BLE001 - any failure: find the product behind it, keep the rest
        logger.warning("a batch of %d failed to describe; describing its products one by one", len(batch))
    out = []
    for d, item in zip(batch, items):
        try:
            out.extend(zip([d], describe_items(describer, [item])))
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
    store = Store(out_dir, readonly=False)
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
    first_of_bytes: dict[str, str] = {}
    good_ids: set[str] = set()
    stages = dict.fromkeys(("decode", "attributes", "detector", "appearance", "colour", "write"), 0.0)
    counts = {"indexed": 0, "added": 0, "updated": 0, "unchanged": 0, "skipped": 0, "blank": 0, "duplicates": 0}
    batch: list[Decoded] = []

    def skip(d: Decoded, reason: str, field: str = "image") -> None:
        counts["skipped"] += 1
        skipped.append(
            {
                "line": d.product.line,
                "id": d.product.id,
                "field": field,
                "reason": reason,
                "image": str(d.product.image),
            }
        )
        logger.warning("skipping %s (line %d): %s", d.product.id, d.product.line, reason)

    def flush() -> None:
        if not batch:
            return
        described = (describe_batch or _describe_batch)(describer, batch, skip)
        records, thumbs = [], {}
        for d, out in described:
            desc = out.description
            for k in ("attributes", "detector", "appearance", "colour"):
                stages[k] += desc.timings_ms.get(k, 0.0) / 1e3
            records.append(product_record(d.product, out))
            thumbs[d.product.id] = out.prepared.thumbnail
            counts["updated" if d.product.id in old else "added"] += 1
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
    bar = tqdm(total=total, desc="index", unit="img", disable=not progress, smoothing=0.05)
    try:
        for d in (decoded_stream or _decoded_stream)(jobs(), cfg.workers):
            stages["decode"] += d.decode_s
            bar.update(1)
            if d.error and not d.blank:
                skip(d, d.error, d.field)
                continue
            if d.image_hash in first_of_bytes:
                counts["duplicates"] += 1
                duplicates.append(
                    {"id": d.product.id, "same_image_as": first_of_bytes[d.image_hash], "image": str(d.product.image)}
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
            if len(batch) >= cfg.batch_size:
                flush()
                bar.set_postfix(indexed=counts["indexed"], skipped=counts["skipped"] + len(report.problems))
        flush()
        bar.update(max(0, total - bar.n))  # rows the reader rejected never reach a worker
    finally:
        bar.close()
    deleted = 0
    if cfg.delete_missing:
        gone = [pid for pid in old if pid not in good_ids]
        deleted = store.delete(gone) if gone else 0
    wall = time.perf_counter() - t_start
    products = len(store)
    summary = {
        **counts,
        "rows": report.rows,
        "bad_rows": len(report.problems),
        "deleted": deleted,
        "products": products,
        "seconds": round(wall, 2),
        "images_per_s": round((counts["indexed"]) / wall, 2) if wall > 0 else None,
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
    }
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(full_report, indent=1) + "\n")
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
