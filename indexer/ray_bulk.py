"""``fashion-search index --engine ray``: the bulk indexer's decode and describe stages run by Ray Data.

The driver is ``indexer.bulk.build_index`` itself: it reads the dump, writes the report (bad rows,
skipped images, duplicates, placeholders), resumes by content hash and commits each batch to the
LMDB store exactly as a local run does. Only its two per-product stages move to Ray Data
(``RayStages``, the run's ``Pipeline``): the dump's rows are decoded by ``stages.decode`` in Ray
tasks, then the products to describe go, in the local run's own batches, through ``map_batches``
on a pool of actors, each of which loads the models once and runs ``stages.decode`` and
``stages.describe`` on a batch.
The driver takes the answers back in dump order (``preserve_order``), so the report and the
store are a local run's, byte for byte (models in eval mode). Each photo is decoded twice, once to
know what to describe and once beside the models: decoding is a small part of the cost.

Rows are handed to Ray in waves of ``WAVE`` so that a dump of millions of products is never held
whole in the driver's memory; each wave starts its own actor pool (one model load per actor per
wave, seconds against the wave's hours).

Without ``address`` Ray starts on this machine; with one (``ray://host:10001`` or ``host:6379``)
the run joins that cluster, whose nodes must see the dump's photos and the models at the same paths.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from indexer.bulk import BulkConfig, Pipeline, build_index
from indexer.describe import Describer, models_signature
from indexer.stages import Decoded, DecodeJob, DescribedProduct, Skip, decode, describe

logger = logging.getLogger(__name__)

WAVE = 20_000  # dump rows per Ray dataset
DECODE_ROWS = 64  # rows per decode task


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide Ray runs the decode and describe stages."""

    address: str | None = None  # a Ray cluster to join; None starts Ray on this machine with ``actors`` CPUs
    actors: int = 2  # actors in the pool, each with one Ray CPU and its own copy of the models
    threads: int | None = None  # torch threads per actor; None: a local run's (at most 2), so the stores are equal

    def __post_init__(self):
        if self.actors < 1:
            raise ValueError(f"--actors must be at least 1, got {self.actors}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--actor-threads must be at least 1, got {self.threads}")


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


def load_describer(models_dir, *, device: str = "cpu", runtime: str = "torch") -> Describer:
    """The describer an actor loads once (the default of ``describer_factory``)."""
    return Describer.load(models_dir, device=device, runtime=runtime)


def _driver_describer(models_dir: Path) -> Describer:
    """What the driver needs of the models (code size, colour settings, signature): the appearance
    coder alone, the attribute model and the detector being loaded by the actors only."""
    from appearance.model import AppearanceCoder

    return Describer(predictor=None, detector=None, coder=AppearanceCoder.load(models_dir))


def _decode_rows(batch: dict) -> dict:
    """Ray task: ``stages.decode`` each row, answering what the driver needs to batch and report it
    (the working-size images are dropped: the actors decode their batches again)."""
    out = []
    for job in batch["job"]:
        d = decode(job)
        out.append(dataclasses.replace(d, photos=[dataclasses.replace(p, prepared=None) for p in d.photos]))
    return {"decoded": out}


class _DescribeActor:
    """One Ray actor: the models loaded once, then ``stages.decode`` + ``stages.describe`` on each
    of the local run's batches (one batch a row)."""

    def __init__(self, models_dir: str, factory: Callable, threads: int):
        import torch

        # a local run's thread count: torch's float sums, and so the stored probabilities, depend on it
        torch.set_num_threads(threads)
        self.describer = factory(models_dir)
        if not self.describer.signature:  # as build_index signs a describer built in memory
            self.describer.signature = models_signature(models_dir)

    def __call__(self, rows: dict) -> dict:
        return {"described": [self._describe(list(jobs)) for jobs in rows["jobs"]]}

    def _describe(self, jobs: list[DecodeJob]) -> list[tuple]:
        decoded = [decode(job) for job in jobs]
        failed: dict[int, tuple[str, str]] = {}

        def skip(d: Decoded, reason: str, field: str = "image") -> None:
            failed[id(d)] = (reason, field)

        for d in decoded:
            if not d.photos:  # decoded well by the first pass: the file changed since
                skip(d, f"the photo changed while indexing: {d.error or 'unchanged now'}", d.field)
        done = {id(d): out for d, out in describe(self.describer, [d for d in decoded if d.photos], skip)}
        out = []
        for d in decoded:
            described = done.get(id(d))
            if described is not None:  # the working-size images are not needed any more: not shipped back
                described = [
                    dataclasses.replace(x, prepared=dataclasses.replace(x.prepared, image=None)) for x in described
                ]
            out.append((d.product.id, described, failed.get(id(d))))
        return out


class RayStages:
    """``build_index``'s decode and describe stages answered by Ray Data (:meth:`pipeline`).

    A wave of dump rows is decoded by Ray tasks first (what is bad, a placeholder or unchanged is
    then known), so the products to describe are cut into the very batches a local run describes
    (``batch_size`` of them in dump order, across waves): the models' float sums, and so the stored
    probabilities, depend on a batch's make-up. The actor pool describes those batches while the
    driver walks the decoded rows; ``describe`` takes each batch's answer in order.
    """

    def __init__(self, models_dir: Path, *, factory: Callable, actors: int, batch_size: int, threads: int):
        self.models_dir = str(models_dir)
        self.threads = threads
        self.factory = factory
        self.actors = actors
        self.batch_size = batch_size
        self._answers: collections.deque = collections.deque()  # iterators over submitted batches' answers

    def pipeline(self) -> Pipeline:
        return Pipeline(decode=self.stream, describe=self.describe)

    def stream(self, jobs: Iterator[DecodeJob], _workers: int) -> Iterator[Decoded]:
        ray = _ray()
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the report and duplicates in dump order
        context.enable_progress_bars = False  # build_index has its own
        context.enable_fallback_to_arrow_object_ext_type = True  # rows are Python objects: said, not warned
        batch: list = []  # jobs of products to describe, until their photos make a local run's batch
        batches: list[list] = []
        wave = list(itertools.islice(jobs, WAVE))
        while wave:
            blocks = -(-len(wave) // DECODE_ROWS)  # enough blocks that every CPU gets some to decode
            rows = ray.data.from_items([{"job": job} for job in wave], override_num_blocks=blocks)
            decoded = [
                r["decoded"] for r in rows.map_batches(_decode_rows, batch_size=DECODE_ROWS, num_cpus=1).iter_rows()
            ]
            for job, d in zip(wave, decoded):
                if d.photos and not d.unchanged:  # as build_index flushes: photos, not products, fill a batch
                    batch.append((job, len(d.photos)))
                    if sum(n for _j, n in batch) >= self.batch_size:
                        batches.append([j for j, _n in batch])
                        batch = []
            wave = list(itertools.islice(jobs, WAVE))
            if not wave and batch:
                batches.append([j for j, _n in batch])
            self._submit(batches)
            batches = []
            yield from decoded

    def _submit(self, batches: list[list]) -> None:
        if not batches:
            return
        ray = _ray()
        batches = [{"jobs": jobs} for jobs in batches]
        # a block per batch: blocks are what the pool hands out, so one block would keep one actor busy
        answers = ray.data.from_items(batches, override_num_blocks=len(batches)).map_batches(
            _DescribeActor,
            fn_constructor_args=(self.models_dir, self.factory, self.threads),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=1,
        )
        self._answers.append(r["described"] for r in answers.iter_rows())

    def describe(self, _describer, batch: list[Decoded], skip: Skip) -> list[DescribedProduct]:
        while True:
            answer = next(self._answers[0], None)
            if answer is not None:
                break
            self._answers.popleft()
        if [pid for pid, _d, _f in answer] != [d.product.id for d in batch]:
            raise RuntimeError("Ray answered another batch than the one flushed: the stages went out of step")
        out = []
        for d, (_pid, described, failure) in zip(batch, answer):
            if failure is not None:
                skip(d, *failure)
            else:
                out.append((d, described))
        return out


def build_index_ray(
    dump,
    models_dir,
    out_dir,
    config: BulkConfig | None = None,
    ray_config: RayConfig | None = None,
    *,
    describer_factory: Callable | None = None,
) -> dict:
    """``build_index`` with its decode and describe stages on Ray; returns the same summary.

    Args:
        config: the run's settings, as a local run's (``workers`` aside: Ray's tasks decode);
            ``batch_size`` photos go to an actor per call, and are committed together.
        ray_config: where Ray runs and how many actors (default: ``RayConfig()``).
        describer_factory: ``factory(models_dir) -> Describer``, called once in each actor (tests pass
            stand-ins; it must be importable by Ray's workers); default: the models of ``models_dir``.
    """
    cfg, ray_cfg = config or BulkConfig(), ray_config or RayConfig()
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(
            f"no models directory at {models_dir}: train the models first (`fashion-search train ...`)"
        )
    import torch

    ray = _ray()
    started = not ray.is_initialized()
    if started:
        start_ray(ray_cfg.address, num_cpus=ray_cfg.actors)
    stages = RayStages(
        models_dir,
        factory=describer_factory or functools.partial(load_describer, device=cfg.device, runtime=cfg.runtime),
        actors=ray_cfg.actors,
        batch_size=cfg.batch_size,
        threads=ray_cfg.threads or min(2, torch.get_num_threads()),  # build_index's own
    )
    try:
        return build_index(
            dump,
            models_dir,
            out_dir,
            dataclasses.replace(cfg, workers=0),
            describer=_driver_describer(models_dir),
            pipeline=stages.pipeline(),
        )
    finally:
        if started:
            ray.shutdown()


__all__ = ["RayConfig", "RayStages", "build_index_ray", "load_describer", "start_ray"]
