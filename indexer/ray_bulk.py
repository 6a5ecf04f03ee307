"""``fashion-search index --engine ray``: the bulk indexer's decode and describe stages run by Ray Data.

The driver is ``indexer.bulk.build_index`` itself: it reads the dump, writes the report (bad rows,
skipped images, duplicates, placeholders), resumes by content hash and commits each batch to the
LMDB store exactly as a local run does. Only its two per-product stages move to Ray: the dump's
rows go through ``ray.data`` ``map_batches`` on a pool of actors, each of which loads the models
once and runs the local indexer's own ``bulk._decode`` and ``bulk._describe_batch`` on its batch;
the driver takes the answers back in dump order (``preserve_order``), so the report and the store
are those of a local run. A product's described form is per photo (models in eval mode), so the
store's records are the local run's, byte for byte.

Rows are handed to Ray in waves of ``WAVE`` so that a dump of millions of products is never held
whole in the driver's memory; each wave starts its own actor pool (one model load per actor per
wave, seconds against the wave's hours).

Without ``address`` Ray starts on this machine; with one (``ray://host:10001`` or ``host:6379``)
the run joins that cluster, whose nodes must see the dump's photos and the models at the same paths.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from indexer.bulk import Decoded, _decode, _describe_batch, build_index
from indexer.describe import Describer, models_signature

logger = logging.getLogger(__name__)

WAVE = 20_000  # dump rows per Ray dataset


def _ray():
    try:
        import ray
    except ImportError as exc:  # an optional extra: say how to get it
        raise ImportError("--engine ray needs Ray Data: pip install 'fashion-search[ray]'") from exc
    return ray


def start_ray(address: str | None = None, *, num_cpus: int = 2, pythonpath: str | None = None):
    """Join the Ray cluster at ``address``, or start Ray here with ``num_cpus`` and a small object
    store (the rows are small: photos are read by the actors); ``pythonpath``: where the workers
    import from besides the installed packages (the tests' stand-ins)."""
    ray = _ray()
    local = {"num_cpus": num_cpus, "object_store_memory": 256 * 2**20} if address is None else {}
    env = {"runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}}} if pythonpath else {}
    return ray.init(address=address, include_dashboard=False, log_to_driver=False, **local, **env)


def load_describer(models_dir, *, device: str = "cpu") -> Describer:
    """The describer an actor loads once (the default of ``describer_factory``)."""
    import torch

    torch.set_num_threads(1)  # one core per actor: the pool's size says how many cores are used
    return Describer.load(models_dir, device=device)


def _driver_describer(models_dir: Path) -> Describer:
    """What the driver needs of the models (code size, colour settings, signature): the appearance
    coder alone, the attribute model and the detector being loaded by the actors only."""
    from appearance.model import AppearanceCoder

    return Describer(predictor=None, detector=None, coder=AppearanceCoder.load(models_dir))


class _DescribeActor:
    """One Ray actor: the models loaded once, then ``bulk._decode`` + ``bulk._describe_batch`` per batch."""

    def __init__(self, models_dir: str, factory: Callable):
        self.describer = factory(models_dir)
        if not self.describer.signature:  # as build_index signs a describer built in memory
            self.describer.signature = models_signature(models_dir)

    def __call__(self, batch: dict) -> dict:
        decoded = [_decode(job) for job in batch["job"]]
        todo = [d for d in decoded if d.error is None and not d.unchanged]
        failed: dict[int, tuple[str, str]] = {}

        def skip(d: Decoded, reason: str, field: str = "image") -> None:
            failed[id(d)] = (reason, field)

        described = {id(d): out for d, out in _describe_batch(self.describer, todo, skip)}
        results = []
        for d in decoded:
            out = described.get(id(d))
            if out is not None:  # the working-size image is not needed any more: do not ship it back
                out = dataclasses.replace(out, prepared=dataclasses.replace(out.prepared, image=None))
            results.append((dataclasses.replace(d, prepared=None), out, failed.get(id(d))))
        return {"result": results}


class RayStages:
    """``build_index``'s ``decoded_stream`` and ``describe_batch`` answered by a Ray actor pool."""

    def __init__(self, models_dir: Path, *, factory: Callable, actors: int, batch_size: int):
        self.models_dir = str(models_dir)
        self.factory = factory
        self.actors = actors
        self.batch_size = batch_size
        self._done: dict[int, tuple] = {}  # id(decoded) -> (described, failure), until its batch is flushed

    def stream(self, jobs: Iterator, _workers: int) -> Iterator[Decoded]:
        ray = _ray()
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the report and duplicates in dump order
        context.enable_progress_bars = False  # build_index has its own
        while wave := list(itertools.islice(jobs, WAVE)):
            rows = ray.data.from_items([{"job": job} for job in wave])
            results = rows.map_batches(
                _DescribeActor,
                fn_constructor_args=(self.models_dir, self.factory),
                batch_size=self.batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=self.actors),
                num_cpus=1,
            )
            for row in results.iter_rows():
                d, out, failure = row["result"]
                if out is not None or failure is not None:
                    self._done[id(d)] = (out, failure)
                yield d

    def describe(self, _describer, batch: list[Decoded], skip) -> list:
        out = []
        for d in batch:
            described, failure = self._done.pop(id(d))
            if failure is not None:
                skip(d, *failure)
            else:
                out.append((d, described))
        return out


def build_index_ray(
    dump,
    models_dir,
    out_dir,
    *,
    address: str | None = None,
    actors: int = 2,
    batch_size: int = 32,
    device: str = "cpu",
    delete_missing: bool = False,
    progress: bool = True,
    describer_factory: Callable | None = None,
    **kwargs,
) -> dict:
    """``build_index`` with its decode and describe stages on Ray; returns the same summary.

    Args:
        address: a Ray cluster to join; None starts Ray on this machine with ``actors`` CPUs.
        actors: actors in the pool, each with one CPU and its own copy of the models.
        batch_size: dump rows per actor call (and products per store commit, as in local mode).
        describer_factory: ``factory(models_dir) -> Describer``, called once in each actor (tests pass
            stand-ins; it must be importable by Ray's workers); default: the models of ``models_dir``.
    """
    if actors < 1:
        raise ValueError(f"--actors must be at least 1, got {actors}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(
            f"no models directory at {models_dir}: train the models first (`fashion-search train ...`)"
        )
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        start_ray(address, num_cpus=actors)
    stages = RayStages(
        models_dir,
        factory=describer_factory or functools.partial(load_describer, device=device),
        actors=actors,
        batch_size=batch_size,
    )
    try:
        return build_index(
            dump,
            models_dir,
            out_dir,
            workers=0,
            batch_size=batch_size,
            device=device,
            delete_missing=delete_missing,
            progress=progress,
            describer=_driver_describer(models_dir),
            decoded_stream=stages.stream,
            describe_batch=stages.describe,
            **kwargs,
        )
    finally:
        if started:
            ray.shutdown()


__all__ = ["RayStages", "build_index_ray", "load_describer", "start_ray"]
