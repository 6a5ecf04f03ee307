"""The bulk indexer: dump -> decode (parallel workers) -> describe (batched) -> LMDB store.

Reader, decoder, describer and writer are separate stages; the runner (:func:`build_index`)
takes an optional ``describer`` so that tests pass small fakes.

Restart-safety: every batch is written in one LMDB transaction, and a product whose id and
content hash (image bytes, seller's text, price, url and the models' signature) are already in
the store is skipped without decoding. A run killed at any moment and started again with the
same command therefore resumes where its last commit left off and ends with every good product
exactly once; a changed dump adds new and updates changed products, and ``delete_missing``
removes products that are no longer in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from foundation import modelfiles
from foundation.dump import DumpReport, Product, read_dump
from foundation.images import ImageError, load_image
from foundation.schema import Schema, default_schema
from foundation.text import category_from_text

logger = logging.getLogger(__name__)

MODEL_NAMES = ("attributes", "detector", "appearance")
BLANK_STD = 2.0  # per-channel standard deviation (0-255) below which an image is a blank placeholder


@dataclass(frozen=True)
class BulkConfig:
    workers: int = 2
    batch_size: int = 32
    max_side: int = 640  # images are shrunk to this before the models (the ROI is mapped back)
    thumb_size: int = 256
    device: str = "cpu"
    delete_missing: bool = False

    def __post_init__(self):
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_side < 32:
            raise ValueError(f"max_side must be at least 32 pixels, got {self.max_side}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")


@dataclass
class Decoded:
    """What a decode worker hands back for one product."""

    product: Product
    content_hash: str
    bytes_hash: str = ""
    image: Image.Image | None = None
    scale: float = 1.0  # original pixels per pixel of ``image``
    thumbnail: bytes = b""
    error: str | None = None
    blank: bool = False
    unchanged: bool = False
    decode_s: float = 0.0


def content_hash(image_bytes: bytes, product: Product, signature: str) -> tuple[str, str]:
    """(content hash, image-bytes hash): what decides whether a stored product is current."""
    ib = hashlib.sha256(image_bytes).hexdigest()
    h = hashlib.sha256(ib.encode())
    h.update(json.dumps([product.title, product.category_path, product.price, product.url, signature]).encode())
    return h.hexdigest()[:32], ib[:32]


def _decode(job: tuple[Product, str | None, str, int, int]) -> Decoded:
    """Worker: read bytes, hash, and (unless unchanged) decode, check, shrink and thumbnail."""
    from indexer.store import make_thumbnail

    product, old_hash, signature, max_side, thumb_size = job
    t0 = time.perf_counter()
    try:
        data = Path(product.image).read_bytes()
    except OSError as exc:
        return Decoded(product, "", error=f"cannot read the image: {exc.strerror or exc}")
    chash, bhash = content_hash(data, product, signature)
    if chash == old_hash:
        return Decoded(product, chash, bhash, unchanged=True, decode_s=time.perf_counter() - t0)
    try:
        image = load_image(data)
    except ImageError as exc:
        return Decoded(product, chash, bhash, error=str(exc), decode_s=time.perf_counter() - t0)
    small = image.copy()
    small.thumbnail((64, 64))
    # per channel: a red garment on a teal ground can have one uniform grey level
    if float(np.asarray(small, np.float32).reshape(-1, 3).std(0).max()) < BLANK_STD:
        return Decoded(product, chash, bhash, blank=True, decode_s=time.perf_counter() - t0)
    scale = 1.0
    if max(image.size) > max_side:
        scale = max(image.size) / max_side
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    thumb = make_thumbnail(image, thumb_size)
    return Decoded(product, chash, bhash, image=image, scale=scale, thumbnail=thumb, decode_s=time.perf_counter() - t0)


def models_signature(models_dir: Path) -> str:
    """A short hash of the models' manifest entries: new models mean every product is re-described."""
    manifest = modelfiles.read_manifest(models_dir)
    entries = {k: manifest["models"][k] for k in sorted(manifest.get("models", {})) if k in MODEL_NAMES}
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


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
        tmp = dest / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(target)


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
    max_side: int = 640,
    on_batch: Callable[[dict], None] | None = None,
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
    """
    from indexer.store import (
        MODELS_DIR,
        REPORT_JSON,
        ProductRecord,
        Store,
        _atomic_write_text,
    )

    cfg = BulkConfig(
        workers=workers, batch_size=batch_size, max_side=max_side, device=device, delete_missing=delete_missing
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
    signature = models_signature(models_dir)
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
            "thumb_size": BulkConfig.thumb_size,
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
        # the seller's text, else the row's labelled category, else the model decides (auto)
        guides = [
            category_from_text(d.product.category_path, d.product.title, schema=schema)
            or d.product.attributes.get("category")
            for d in batch
        ]
        descs = describer.describe([d.image for d in batch], guides=guides)
        records, thumbs = [], {}
        for d, desc in zip(batch, descs):
            for k in ("attributes", "detector", "appearance", "colour"):
                stages[k] += desc.timings_ms.get(k, 0.0) / 1e3
            if d.scale != 1.0:  # back to the original image's pixels
                desc.roi = tuple(int(round(v * d.scale)) for v in desc.roi)
            desc.timings_ms = {}
            p = d.product
            records.append(
                ProductRecord(p.id, p.title, p.category_path, p.price, p.url, str(p.image), desc, d.content_hash)
            )
            thumbs[p.id] = d.thumbnail
            counts["updated" if p.id in old else "added"] += 1
        t0 = time.perf_counter()
        store.put(records, thumbs)
        stages["write"] += time.perf_counter() - t0
        counts["indexed"] += len(records)
        batch.clear()
        if on_batch:
            on_batch(dict(counts))

    def jobs():
        for p in read_dump(dump, schema=schema, report=report, check_images=False):
            yield p, old.get(p.id), signature, cfg.max_side, cfg.thumb_size

    total = _count_rows(dump)
    bar = tqdm(total=total, desc="index", unit="img", disable=not progress, smoothing=0.05)
    try:
        for d in _decoded_stream(jobs(), cfg.workers):
            stages["decode"] += d.decode_s
            bar.update(1)
            if d.error:
                skip(d, d.error)
                continue
            if d.bytes_hash in first_of_bytes:
                counts["duplicates"] += 1
                duplicates.append(
                    {"id": d.product.id, "same_image_as": first_of_bytes[d.bytes_hash], "image": str(d.product.image)}
                )
            else:
                first_of_bytes[d.bytes_hash] = d.product.id
            if d.blank:
                counts["blank"] += 1
                skip(d, "blank or placeholder image (near-uniform)")
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
    _atomic_write_text(out_dir / REPORT_JSON, json.dumps(full_report, indent=1) + "\n")
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


__all__ = ["BulkConfig", "build_index", "content_hash", "models_signature"]
