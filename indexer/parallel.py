"""Bulk indexing's decode and describe stages in the same worker processes, each with the models.

``fashion-search index --describe-workers N``: each of ``N`` processes loads the models once, on
one thread, and decodes and describes a product at a time; the runner (``indexer.bulk``) admits,
reports and writes as before. On a CPU this beats one process describing batches on every
thread: the detector's RPN, RoI pooling and box head gain little from a second thread or from a
batch (torchvision pads a batch's photos to one size), while two single-thread processes keep
both cores on the models (``benchmarks/bulk_throughput.py``).

A product whose description fails is reported and left out, as in the batched path.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from pathlib import Path

from indexer.describe import Describer, describe_items
from indexer.products import product_item
from indexer.stages import Decoded, DecodeJob, DescribedProduct, Skip, decode

_DESCRIBER: Describer | None = None  # the worker process's own models


def _load_models(models_dir: str, runtime: str, device: str) -> None:
    """A worker's start: its models, on one thread (torch's, and ONNX Runtime's, which follows it)."""
    import torch

    global _DESCRIBER
    torch.set_num_threads(1)
    _DESCRIBER = Describer.load(models_dir, runtime=runtime, device=device)


def decode_and_describe(job: DecodeJob) -> Decoded:
    """:func:`indexer.stages.decode`, then (for a product to describe) every photo described."""
    d = decode(job)
    if d.error or d.unchanged or not d.photos:
        return d
    try:
        d.described = describe_items(_DESCRIBER, [product_item(d.product, p.prepared) for p in d.photos])
    except Exception as exc:  # noqa: BLE001 - any failure: this product is reported, the rest go on
        d.describe_error = f"cannot describe: {exc.__class__.__name__}: {str(exc)[:200]}"
    return d


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
            yield from pool.imap(decode_and_describe, jobs, chunksize=1)

    @staticmethod
    def describe(_describer: Describer, batch: list[Decoded], skip: Skip) -> list[DescribedProduct]:
        out = []
        for d in batch:
            if d.describe_error or d.described is None:
                skip(d, d.describe_error or "not described", "image")
            else:
                out.append((d, d.described))
        return out


__all__ = ["WorkerStages", "decode_and_describe"]
