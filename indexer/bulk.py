"""The bulk indexer's runner: dump -> read -> decode (parallel workers) -> describe (batched) ->
write (LMDB store), the stages of ``indexer.stages``, with a :class:`Report` of what it did.

:func:`build_index` takes its settings as one :class:`BulkConfig`, and a :class:`Pipeline` of
replaceable parts: tests pass small fakes of the describer, ``indexer.ray_bulk`` runs the decode
and describe stages on Ray Data, and ``describe_workers`` runs both in worker processes that each
hold the models (``indexer.parallel``).

Restart-safety: every batch is written in one LMDB transaction, and a product whose id and
content hash (``indexer.prepare.content_hash``: every photo's bytes, the product's fields and the
models' signature) are already in the store is skipped without decoding. A run killed at any
moment and started again with the same command therefore resumes where its last commit left off
and ends with every good product exactly once; a changed dump adds new and updates changed
products, and ``delete_missing`` removes products that are no longer in it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from foundation import modelfiles
from foundation.atomic import atomic_copy, atomic_write_text
from foundation.dump import DumpReport
from foundation.runtime import check_runtime
from foundation.schema import default_schema
from indexer.describe import MODEL_NAMES, Describer, models_signature
from indexer.graphs import copy_graphs
from indexer.parallel import WorkerStages
from indexer.prepare import ImageLimits
from indexer.stages import (
    Decoded,
    DecodeJob,
    DecodeSettings,
    DescribedProduct,
    Skip,
    decode_all,
    describe,
    read,
    write,
)
from indexer.store import MODELS_DIR, REPORT_JSON, Store

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
COUNTS = ("indexed", "photos", "added", "updated", "unchanged", "skipped", "blank", "duplicates", "photos_left_out")
STAGES = ("decode", "attributes", "detector", "appearance", "colour", "write")


@dataclass(frozen=True)
class BulkConfig:
    workers: int = 2  # decode processes (0: decode in this process)
    describe_workers: int = (
        0  # >0: that many processes decode and describe, each with the models (``indexer.parallel``)
    )
    batch_size: int = 32  # photos per model batch and per commit
    limits: ImageLimits = ImageLimits()  # noqa: B008 - frozen
    device: str = "cpu"
    runtime: str = "torch"  # or "onnx": the models' CNNs on ONNX Runtime (foundation.runtime)
    delete_missing: bool = False  # remove stored products that are not in the dump
    progress: bool = True  # a progress bar

    def __post_init__(self):
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.describe_workers < 0:
            raise ValueError(f"--describe-workers must be 0 or more, got {self.describe_workers}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        check_runtime(self.runtime, self.device)


@dataclass(frozen=True)
class Pipeline:
    """The runner's replaceable parts: where the decode and describe stages run (here by default;
    ``indexer.ray_bulk`` answers both from Ray Data), and who hears of each commit."""

    decode: Callable[[Iterable[DecodeJob], int], Iterator[Decoded]] = decode_all  # (jobs, workers)
    describe: Callable[[Describer, list[Decoded], Skip], list[DescribedProduct]] = describe
    on_batch: Callable[[dict], None] | None = None  # called with the running counts after each commit


class Report:
    """What a bulk run did, accumulated as its stages go: the counts, each stage's seconds and the
    lists ``report.json`` gives (skipped products, duplicate photos, photos left out)."""

    def __init__(self, stored: Collection[str]):
        self.rows = DumpReport()  # the reader's: rows read and bad rows
        self.counts = dict.fromkeys(COUNTS, 0)
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.skipped: list[dict] = []
        self.duplicates: list[dict] = []
        self.photos_left_out: list[dict] = []
        self.good_ids: set[str] = set()  # every good product of the dump, described now or unchanged
        self.done = 0  # products decoded (rows read, once the dump is through)
        self._stored = stored  # ids the store held when the run started
        self._first_of_bytes: dict[str, str] = {}  # a first photo's hash -> the product that had it first

    def skip(self, d: Decoded, reason: str, field: str = "image") -> None:
        """A product left out, and why."""
        self.counts["skipped"] += 1
        image = str(d.product.photos[0].path) if d.product.photos else ""
        self.skipped.append(
            {"line": d.product.line, "id": d.product.id, "field": field, "reason": reason, "image": image}
        )
        logger.warning("skipping %s (line %d): %s", d.product.id, d.product.line, reason)

    def decoded(self, d: Decoded) -> None:
        """A product came out of the decode stage."""
        self.seconds["decode"] += d.decode_s
        self.done += 1

    def admit(self, d: Decoded) -> bool:
        """Report a decoded product's photos left out, its problem and its duplicate first photo;
        True when it goes on to be described (good, and changed or new)."""
        pid = d.product.id
        for problem in d.photo_problems if d.photos or d.unchanged else []:
            self.counts["photos_left_out"] += 1
            self.photos_left_out.append({"line": d.product.line, "id": pid, **problem})
        if d.error and not d.blank:
            self.skip(d, d.error, d.field)
            return False
        if d.image_hash in self._first_of_bytes:
            self.counts["duplicates"] += 1
            image = str(d.product.photos[0].path)
            self.duplicates.append({"id": pid, "same_image_as": self._first_of_bytes[d.image_hash], "image": image})
        else:
            self._first_of_bytes[d.image_hash] = pid
        if d.blank:
            self.counts["blank"] += 1
            self.skip(d, d.error or "blank or placeholder image")
            return False
        self.good_ids.add(pid)
        if d.unchanged:
            self.counts["unchanged"] += 1
            return False
        return True

    def described(self, described: list[DescribedProduct]) -> None:
        """A batch came out of the describe stage (before the writer drops the photos' timings)."""
        for d, photos in described:
            for photo in photos:
                for k in ("attributes", "detector", "appearance", "colour"):
                    self.seconds[k] += photo.description.timings_ms.get(k, 0.0) / 1e3
            self.counts["updated" if d.product.id in self._stored else "added"] += 1
            self.counts["photos"] += len(photos)

    def written(self, products: int, seconds: float) -> None:
        self.counts["indexed"] += products
        self.seconds["write"] += seconds

    def summary(self, store: Store, deleted: int, wall: float) -> dict:
        """The run's figures, once it is through (``store``: the index it wrote)."""
        products, stages = len(store), self.seconds
        return {
            **self.counts,
            "rows": self.rows.rows,
            "bad_rows": len(self.rows.problems),
            "deleted": deleted,
            "products": products,
            "seconds": round(wall, 2),
            "images_per_s": round(self.counts["photos"] / wall, 2) if wall > 0 else None,
            "products_per_s": round(self.counts["indexed"] / wall, 2) if wall > 0 else None,
            "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
            "stage_share": {k: round(v / max(sum(stages.values()), 1e-9), 3) for k, v in stages.items()},
            "store_bytes": store.bytes_on_disk(),
            "store_bytes_per_product": round(store.bytes_on_disk() / products) if products else None,
        }

    def to_json(self, dump: Path, summary: dict) -> dict:
        """``report.json``: the summary and every product, photo and row left out."""
        bad_rows = [{"line": p.line, "id": p.id, "field": p.field, "reason": p.reason} for p in self.rows.problems]
        return {
            "dump": str(dump),
            "summary": summary,
            "skipped": bad_rows + self.skipped,
            "duplicates": self.duplicates,
            "photos_left_out": self.photos_left_out,
        }


class _ProgressFile:
    """``progress.json``, for a server serving the index: the run's state and the report's counts."""

    def __init__(self, store: Store, report: Report, running: dict):
        self.store, self.report, self.running = store, report, running
        self._last = 0.0

    def say(self, state: dict | None = None, *, every_s: float = 0.0) -> None:
        """Write it (at most every ``every_s`` seconds)."""
        if time.monotonic() - self._last >= every_s:
            self._last = time.monotonic()
            counts = self.report.counts
            self.store.write_progress(
                {**self.running, **(state or {}), "done": self.report.done, **counts, "at": time.time()}
            )


def _copy_models(models_dir: Path, dest: Path) -> None:
    """Copy the model files into the index (atomically per file), so the index is self-sufficient;
    their ONNX graphs too, where exported, so that it serves with ``--runtime onnx`` as well."""
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
    copy_graphs(models_dir, dest)


def _count_rows(dump: Path) -> int:
    with dump.open("rb") as fh:
        n = sum(1 for line in fh if line.strip())
    return n - 1 if dump.suffix.lower() == ".csv" else n


def _ready_describer(describer: Describer | None, models_dir: Path, cfg: BulkConfig) -> Describer:
    """The describer given (signed with the models it stands for, when built in memory), else the models'."""
    if describer is None:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
        describer = Describer.load(models_dir, device=cfg.device, schema=default_schema(), runtime=cfg.runtime)
    if not describer.signature:
        describer.signature = models_signature(models_dir)
    return describer


def _open_index(out_dir: Path, models_dir: Path, dump: Path, describer: Describer, limits: ImageLimits) -> Store:
    """The index directory, its models copied in and its ``index.json`` written; its store open
    to write (one of an older format emptied, to be indexed again)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_models(models_dir, out_dir / MODELS_DIR)
    store = Store(out_dir, readonly=False, reindex=True)
    store.write_info(
        {
            "code_bytes": int(describer.code_bytes),
            "code_bits": int(describer.code_bytes) * 8,
            "colour_bins": int(describer.colour.bins),
            "colour": describer.colour.to_dict(),
            "models_dir": MODELS_DIR,
            "models": modelfiles.read_manifest(models_dir).get("models", {}),
            "models_signature": describer.signature,
            "dump": str(dump.resolve()),
            "schema_fingerprint": describer.schema.fingerprint,
            "thumb_size": limits.thumb_size,
            "working_side": limits.working_side,
        }
    )
    return store


def _commit(batch: list[Decoded], describer: Describer, store: Store, report: Report, pipeline: Pipeline) -> None:
    """Describe and write one batch; tell ``pipeline.on_batch``."""
    described = pipeline.describe(describer, batch, report.skip)
    report.described(described)
    t0 = time.perf_counter()
    records = write(store, described)
    report.written(len(records), time.perf_counter() - t0)
    if pipeline.on_batch:
        pipeline.on_batch(dict(report.counts))


def build_index(
    dump: str | Path,
    models_dir: str | Path,
    out_dir: str | Path,
    config: BulkConfig | None = None,
    *,
    describer: Describer | None = None,
    pipeline: Pipeline | None = None,
) -> dict:
    """Index (or update) ``dump`` into the index directory ``out_dir``; returns the summary.

    Args:
        dump: a product dump (JSON Lines or CSV).
        models_dir: the trained models (attributes.pt, detector.pt, appearance.pt); copied into
            ``out_dir/models``.
        config: the run's settings (default: ``BulkConfig()``).
        describer: a ready :class:`indexer.describe.Describer` (tests); default: loaded from the
            models.
        pipeline: where the decode and describe stages run, and an ``on_batch`` hook.
    """
    cfg = config or BulkConfig()
    dump, models_dir, out_dir = Path(dump), Path(models_dir), Path(out_dir)
    if pipeline is None and cfg.describe_workers:
        stages = WorkerStages(models_dir, cfg.runtime, cfg.device, cfg.describe_workers)
        pipeline = Pipeline(decode=stages.decode, describe=stages.describe)
    pipeline = pipeline or Pipeline()
    if not dump.is_file():
        raise FileNotFoundError(f"no product dump at {dump}")
    if not models_dir.is_dir():
        raise FileNotFoundError(
            f"no models directory at {models_dir}: train the models first (`fashion-search train ...`)"
        )
    t_start = time.perf_counter()
    describer = _ready_describer(describer, models_dir, cfg)
    store = _open_index(out_dir, models_dir, dump, describer, cfg.limits)
    settings = DecodeSettings(describer.signature, cfg.limits, store.hashes())
    report = Report(settings.stored)
    total = _count_rows(dump)
    running = {"state": "running", "pid": os.getpid(), "dump": str(dump), "started": time.time(), "rows": total}
    progress = _ProgressFile(store, report, running)
    bar = tqdm(total=total, desc="index", unit="product", disable=not cfg.progress, smoothing=0.05)
    progress.say()
    try:
        batch: list[Decoded] = []
        for d in pipeline.decode(read(dump, describer.schema, report.rows, settings), cfg.workers):
            report.decoded(d)
            bar.update(1)
            progress.say(every_s=PROGRESS_EVERY_S)
            if not report.admit(d):
                continue
            batch.append(d)
            if sum(len(b.photos) for b in batch) >= cfg.batch_size:
                _commit(batch, describer, store, report, pipeline)
                batch = []
                bar.set_postfix(
                    indexed=report.counts["indexed"], skipped=report.counts["skipped"] + len(report.rows.problems)
                )
        if batch:
            _commit(batch, describer, store, report, pipeline)
        bar.update(max(0, total - bar.n))  # rows the reader rejected never reach a worker
        report.done = report.rows.rows
        gone = [pid for pid in settings.stored if pid not in report.good_ids] if cfg.delete_missing else []
        deleted = store.delete(gone) if gone else 0
    except BaseException as exc:
        progress.say({"state": "failed", "error": f"{exc.__class__.__name__}: {str(exc)[:300]}"})
        store.close()
        raise
    finally:
        bar.close()
    built = store.mark_built()  # what a running server waits for before it loads the new index
    wall = time.perf_counter() - t_start
    summary = report.summary(store, deleted, wall)
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(report.to_json(dump, summary), indent=1) + "\n")
    progress.say({"state": "done", "built": built, "finished": time.time(), "seconds": summary["seconds"]})
    store.close()
    logger.info(
        "indexed %d products (%d unchanged, %d skipped, %d bad rows) in %.1fs",
        report.counts["indexed"],
        report.counts["unchanged"],
        report.counts["skipped"],
        len(report.rows.problems),
        wall,
    )
    return summary


__all__ = ["BulkConfig", "Pipeline", "Report", "build_index"]
