"""Bulk indexing's decode and describe stages in the same worker processes, each with the models.

``fashion-search index --describe-workers N``: each of ``N`` processes loads the models once, on
one thread, and decodes and describes a few products at a time (``CHUNK``); the runner
(``indexer.bulk``) admits, reports and writes as before. On a CPU this beats one process describing batches on every
thread: the detector's RPN, RoI pooling and box head gain little from a second thread or from a
batch (torchvision pads a batch's photos to one size), while two single-thread processes keep
both cores on the models (``benchmarks/bulk_throughput.py``).

A product whose description fails is reported and left out, as in the batched path.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from pathlib import Path

from indexer.describe import Describer
from indexer.stages import Decoded, DecodeJob, DescribedProduct, Skip, decode, describe, die_with_parent

_DESCRIBER: Describer | None = None  # the worker process's own models
_LOAD_ERROR: str | None = None  # why they did not load: said by the first job, not by a pool that respawns forever
# products a worker decodes and describes together. The detector's time a photo on one thread was
# 63 ms alone, 58 ms in fours, 66 ms in sixteens (torchvision pads a batch to its largest photo);
# whole runs (676 val photos, ONNX Runtime, 2 workers) gave 19.2 photos/s one at a time, 19.4 in fours.
CHUNK = 4


def _chunks(jobs: Iterable[DecodeJob], n: int) -> Iterator[list[DecodeJob]]:
    chunk: list[DecodeJob] = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_models(models_dir: str, runtime: str, device: str) -> None:
    """A worker's start: it dies with the indexer (a SIGKILLed run leaves no worker behind); its
    models, on one thread (torch's, and ONNX Runtime's, which follows it)."""
    import torch

    global _DESCRIBER, _LOAD_ERROR
    die_with_parent()
    torch.set_num_threads(1)
    try:
        _DESCRIBER = Describer.load(models_dir, runtime=runtime, device=device)
    except Exception as exc:  # noqa: BLE001 - an initializer that raises makes the pool start workers forever
        _LOAD_ERROR = f"{exc.__class__.__name__}: {exc}"


def _note_error(d: Decoded, reason: str, _field: str = "image") -> None:
    d.describe_error = reason  # reported by the runner's report, in the parent


def decode_and_describe(jobs: list[DecodeJob]) -> list[Decoded]:
    """:func:`indexer.stages.decode` each job, then every photo of the products to describe, in one
    batch (on failure one product at a time: :func:`indexer.stages.describe`)."""
    if _LOAD_ERROR is not None:
        raise RuntimeError(f"a describe worker could not load the models: {_LOAD_ERROR}")
    decoded = [decode(job) for job in jobs]
    todo = [d for d in decoded if not (d.error or d.unchanged or not d.photos)]
    for d, photos in describe(_DESCRIBER, todo, _note_error) if todo else []:
        d.described = photos
    return decoded


class WorkerStages:
    """The decode and describe stages of a :class:`indexer.bulk.Pipeline` for ``workers`` processes
    that each hold the models of ``models_dir``."""

    def __init__(self, models_dir: Path, runtime: str, device: str, workers: int):
        if workers < 1:
            raise ValueError(f"--describe-workers must be at least 1, got {workers}")
        self.init_args = (str(models_dir), runtime, device)
        self.workers = workers

    def decode(self, jobs: Iterable[DecodeJob], _decode_workers: int) -> Iterator[Decoded]:
        # spawn: the workers import torch and load models (fork after torch's threads started can hang)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(self.workers, initializer=_load_models, initargs=self.init_args) as pool:
            for decoded in pool.imap(decode_and_describe, _chunks(jobs, CHUNK)):
                yield from decoded

    @staticmethod
    def describe(_describer: Describer, batch: list[Decoded], skip: Skip) -> list[DescribedProduct]:
        out = []
        for d in batch:
            if d.describe_error or d.described is None:
                skip(d, d.describe_error or "not described", "image")
            else:
                out.append((d, d.described))
        return out


__all__ = ["CHUNK", "WorkerStages", "decode_and_describe"]
