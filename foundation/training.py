"""One training loop for every model: AdamW, linear warmup then cosine (``SequentialLR``), AMP on
CUDA, gradient clipping, a time budget, early stopping and a checkpoint a run resumes exactly from.
A model plugs in as a ``TrainTask`` (its ``model``, the ``parameters()`` to train and a
``loss(batch, device)``); the loop owns seeding, threads, device placement and everything above.

Exact resume: the checkpoint holds the model, optimiser, scheduler and scaler states, the position
(epoch, batch, step), the history and every random state (torch, CUDA, numpy, Python, the loader's
generator) now and at the start of the epoch. A run stopped mid-epoch replays that epoch's loader
order up to where it stopped (loading, not training, those batches), then restores the random
states of the moment it stopped: on CPU it ends with the weights of an uninterrupted run. This
needs a loader ordered by its ``generator`` (or torch's global RNG) without persistent workers.
A checkpoint made with other learning settings is refused, naming them; where and how long a run
goes (device, threads, budgets) may change.

Each model's config is a ``TrainSettings`` (``foundation.train_settings``): the run settings every
trainer shares, its presets, and the ``LoopConfig`` and learning settings it gives the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from foundation.devices import parse_device
from foundation.modelfiles import ModelFile, config_differences, load_model, save_model
from foundation.schema import Schema
from foundation.train_settings import RUN_SETTINGS, LoopConfig, TrainSettings, pick_preset

__all__ = ["RUN_SETTINGS", "Checkpoint", "LoopConfig", "LoopResult", "RunOptions", "TrainSettings", "pick_preset"]
__all__ += ["ResumeError", "TrainTask", "seed_everything", "torch_threads", "train_loop"]

logger = logging.getLogger(__name__)

WARMUP_START = 0.04  # warmup starts at lr / 25 (OneCycleLR's default): small steps while AdamW's moments settle


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed with these settings."""


class TrainTask(Protocol):
    """What the loop trains: ``loss`` returns the batch's loss, or it and a dict of floats to average."""

    model: nn.Module

    def parameters(self) -> Iterable[nn.Parameter]: ...

    def loss(self, batch: Any, device: torch.device) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]: ...


@dataclass(frozen=True)
class Checkpoint:
    """Where the resumable checkpoint goes (``<models_dir>/<name>.pt``) and what it records."""

    models_dir: Path
    name: str
    settings: Mapping[str, Any]  # the model's own learning settings (its config, data and loss settings)
    preprocessing: Mapping[str, Any]
    schema: Schema | None = None
    data_hash: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.models_dir) / f"{self.name}.pt"


@dataclass(frozen=True)
class LoopResult:
    history: list[dict]  # one record per complete epoch, over all runs
    epochs_done: int
    epochs_planned: float  # the config's epochs, or fewer (a fraction) when the time budget holds fewer (fit_to_budget)
    steps: int
    stopped: str  # finished | early_stopped | time_budget | max_steps
    best: float | None  # the best monitored loss (validation, else training)
    best_epoch: int | None
    last_loss: float | None  # mean loss of the last epoch's batches, complete or not
    seconds: float  # this run's
    device: str
    resumed: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CUDA's generators too


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Intra-op threads set to ``n`` for the block, then back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rng_state(loader=None) -> dict:
    """Every random state a training step or the loader draws from (weights_only-loadable)."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(loader, "generator", None) is not None:
        state["loader"] = loader.generator.get_state()
    return state


def set_rng_state(state: dict, loader=None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "loader" in state and getattr(loader, "generator", None) is not None:
        loader.generator.set_state(state["loader"])


def build_schedule(optimizer: torch.optim.Optimizer, cfg: LoopConfig, total_steps: int):
    """Linear warmup from ``lr / 25`` then cosine annealing to 0, stepped once a batch."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup = cfg.warmup_steps or round(cfg.warmup_share * total_steps)
    warmup = min(warmup, total_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=0.0)
    if warmup <= 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=WARMUP_START, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


@dataclass
class _State:
    epoch: int = 0  # complete epochs
    batch: int = 0  # batches done of the current epoch
    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    since_best: int = 0
    running: dict = dataclasses.field(default_factory=lambda: {"loss": 0.0, "batches": 0, "seconds": 0.0})
    epoch_rng: dict | None = None  # the random states when the current epoch began
    rng_now: dict | None = None  # a resumed run's random states, set once the loader is positioned
    planned_steps: int | None = None  # steps the schedule spans once fitted to the time budget (None: all)


SAVED = (
    "epoch",
    "batch",
    "step",
    "history",
    "best",
    "best_epoch",
    "since_best",
    "running",
    "epoch_rng",
    "planned_steps",
)
BUDGET_MARGIN = 0.97  # share of the time budget the fitted epochs are planned to fill
FIT_AFTER = 2  # epochs timed before fitting: the first alone runs slower (caches, a busy machine)


@dataclass(frozen=True)
class RunOptions:
    """What one call of ``train_loop`` does around the training itself.

    Args:
        checkpoint: where the resumable checkpoint goes; None writes none (and cannot resume).
        resume: continue from ``checkpoint`` when it exists (a fresh start, logged, when not).
        val_fn: the validation loss of the model (lower is better), computed after each epoch in
            eval mode without gradients; without it the epoch's training loss is monitored.
        on_best: called with the model and the epoch's record when the monitored loss improves.
        progress: show progress bars.
        desc: the run's name in progress bars and the log.
    """

    checkpoint: Checkpoint | None = None
    resume: bool = False
    val_fn: Callable[[nn.Module, torch.device], float] | None = None
    on_best: Callable[[nn.Module, dict], None] | None = None
    progress: bool = True
    desc: str = "train"


def train_loop(task: TrainTask, loader, cfg: LoopConfig, options: RunOptions | None = None) -> LoopResult:
    """Train ``task.model`` on ``loader`` as ``cfg`` says, with ``options``; returns what happened."""
    options = options or RunOptions()
    desc, checkpoint = options.desc, options.checkpoint
    if len(loader) == 0:
        raise ValueError(f"{desc}: the training data gives no batch (too few examples for the batch size?)")
    if getattr(loader, "persistent_workers", False):
        logger.warning("%s: persistent loader workers keep their random state across epochs; resume is not exact", desc)
    with torch_threads(cfg.threads):
        loop = _Loop(task, loader, cfg, options)
        if options.resume and checkpoint is not None and checkpoint.path.is_file():
            loop.restore()
        elif options.resume:
            logger.info("%s: no checkpoint to resume from; starting from scratch", desc)
        return loop.run()


class _Loop:
    def __init__(self, task, loader, cfg: LoopConfig, options: RunOptions):
        self.task, self.loader, self.cfg, self.options = task, loader, cfg, options
        checkpoint, self.desc = options.checkpoint, options.desc
        self.checkpoint = checkpoint
        self.device = parse_device(cfg.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        seed_everything(cfg.seed)
        self.model = task.model.to(self.device)
        self.params = [p for p in task.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = build_schedule(self.optimizer, cfg, cfg.epochs * len(loader))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.parts = dict(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)
        data = {"data_hash": checkpoint and checkpoint.data_hash, "batches_per_epoch": len(loader)}
        task = dict(checkpoint.settings) if checkpoint else {}
        self.settings = {"loop": cfg.learning_settings(), "task": task, "data": data}
        self.state, self.resumed = _State(), False

    def restore(self) -> None:
        ck = self.checkpoint
        saved = load_model(ck.models_dir, ck.name, schema=ck.schema)
        diffs = config_differences(saved["config"].get("learning", {}), self.settings)  # none recorded: all differ
        if diffs:
            raise ResumeError(
                f"cannot resume from {ck.path}: it was trained with other settings ({'; '.join(diffs[:6])}); "
                "use those settings or train again without resume"
            )
        for key, part in self.parts.items():
            if key == "scaler" and not (part.is_enabled() and saved["state_dicts"][key]):
                continue  # AMP switched on or off between runs: a fresh scale
            part.load_state_dict(saved["state_dicts"][key])
        extra = saved["extra"]
        self.state, self.resumed = _State(**{k: extra.get(k) for k in SAVED}, rng_now=extra["rng"]), True
        logger.info("resuming %s at epoch %d, batch %d", ck.path, self.state.epoch + 1, self.state.batch)

    def save(self) -> None:
        ck = self.checkpoint
        if ck is None or not self.cfg.checkpoint:
            return
        save_model(
            ck.models_dir,
            ck.name,
            ModelFile(
                state_dicts={k: v.state_dict() for k, v in self.parts.items()},
                config={"learning": self.settings, "loop": dataclasses.asdict(self.cfg)},
                preprocessing=dict(ck.preprocessing),
                extra={**{k: getattr(self.state, k) for k in SAVED}, "rng": rng_state(self.loader)},
            ),
            schema=ck.schema,
            data_hash=ck.data_hash,
        )

    def batches(self) -> Iterator:
        """The current epoch's batches from where the state stands (replaying the order of those done)."""
        s = self.state
        if s.batch > 0:  # resumed mid-epoch: the epoch's order again, up to where it stopped
            set_rng_state(s.epoch_rng, self.loader)
            batches = iter(self.loader)
            for _ in range(s.batch):
                next(batches)
        if s.rng_now is not None:  # resumed: the random states of the moment it stopped
            set_rng_state(s.rng_now, self.loader)
            s.rng_now = None
        if s.batch == 0:
            s.epoch_rng = rng_state(self.loader)
            batches = iter(self.loader)
        return batches

    def step(self, batch) -> None:
        with torch.autocast(self.device.type, enabled=self.amp):
            out = self.task.loss(batch, self.device)
        loss, extras = out if isinstance(out, tuple) else (out, {})
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        run = self.state.running
        for key, value in {"loss": loss.item(), **extras}.items():
            run[key] = run.get(key, 0.0) + float(value)
        run["batches"] += 1

    def planned_epochs(self) -> int:
        """Epochs the schedule spans: the config's, or those the fitted steps reach into."""
        if self.state.planned_steps is None:
            return self.cfg.epochs
        return math.ceil(self.state.planned_steps / len(self.loader))

    def schedule_done(self) -> bool:
        return self.state.planned_steps is not None and self.state.step >= self.state.planned_steps

    def run(self) -> LoopResult:
        cfg, s, n_batches = self.cfg, self.state, len(self.loader)
        t0, run_steps, stopped, trained_s = time.perf_counter(), 0, None, 0.0
        while s.epoch < self.planned_epochs() and stopped is None:
            if cfg.patience is not None and s.since_best >= cfg.patience:
                stopped = "early_stopped"
                break
            self.model.train()
            t_epoch, out_of_time = time.perf_counter(), False
            desc = f"{self.desc} epoch {s.epoch + 1}/{self.planned_epochs()}"
            bar = tqdm(
                self.batches(),
                total=n_batches,
                initial=s.batch,
                desc=desc,
                unit="batch",
                disable=not self.options.progress,
            )
            for batch in bar:
                self.step(batch)
                s.batch, s.step, run_steps = s.batch + 1, s.step + 1, run_steps + 1
                bar.set_postfix(loss=f"{s.running['loss'] / s.running['batches']:.3f}")
                if self.schedule_done():
                    break  # the fitted schedule has annealed: its last epoch ends here
                spent = time.perf_counter() - t0
                out_of_time = out_of_time or (cfg.max_minutes is not None and spent > 60 * cfg.max_minutes)
                if cfg.max_steps is not None and run_steps >= cfg.max_steps:
                    stopped = "max_steps"
                elif out_of_time and not cfg.finish_epoch:
                    stopped = "time_budget"
                if stopped is not None and s.batch < n_batches:
                    break
            bar.close()
            s.running["seconds"] += time.perf_counter() - t_epoch
            trained_s += time.perf_counter() - t_epoch
            if s.batch < n_batches and not self.schedule_done():  # stopped mid-epoch
                logger.info("%s: stopped (%s) in epoch %d after batch %d", self.desc, stopped, s.epoch + 1, s.batch)
                self.save()
                break
            self.end_epoch()
            spent = time.perf_counter() - t0
            if self.fit_now(spent) and not self.resumed and not out_of_time:
                self.fit_to_budget(trained_s / max(run_steps, 1), (spent - trained_s) / s.epoch, spent)
                if self.schedule_done():
                    stopped = "time_budget"  # the budget holds no step more
            if out_of_time and stopped is None:
                stopped = "time_budget"
            self.save()
        run, history = s.running, s.history
        last_loss = run["loss"] / run["batches"] if run["batches"] else history[-1]["train_loss"] if history else None
        return LoopResult(
            history=s.history,
            epochs_done=s.epoch,
            epochs_planned=round(s.planned_steps / n_batches, 2) if s.planned_steps is not None else cfg.epochs,
            steps=s.step,
            stopped=stopped or "finished",
            best=s.best,
            best_epoch=s.best_epoch,
            last_loss=last_loss,
            seconds=round(time.perf_counter() - t0, 1),
            device=str(self.device),
            resumed=self.resumed,
        )

    def fit_now(self, spent_s: float) -> bool:
        """Whether to fit the schedule to the budget at this epoch's end: after ``FIT_AFTER`` epochs
        (or the first of two), or sooner when the next epoch would not end within the budget."""
        cfg, done = self.cfg, self.state.epoch
        if cfg.max_minutes is None or done >= cfg.epochs:
            return False
        slow = spent_s / done * (done + 1) > BUDGET_MARGIN * 60 * cfg.max_minutes
        return done == min(FIT_AFTER, cfg.epochs - 1) or (done < FIT_AFTER and slow)

    def fit_to_budget(self, step_s: float, val_s: float, spent_s: float) -> None:
        """After the first epochs (``FIT_AFTER``, or the first of two), plan only the steps the time
        budget holds at their pace (``step_s`` a step, ``val_s`` a validation, ``spent_s`` so far),
        and anneal the schedule over them, its last epoch cut where they end: a cosine schedule cut
        by the budget midway never reaches its low learning rates, where a model's last gains are."""
        cfg, s, n = self.cfg, self.state, len(self.loader)
        if cfg.max_minutes is None or s.planned_steps is not None:
            return
        left = BUDGET_MARGIN * 60 * cfg.max_minutes - spent_s
        cap = cfg.epochs * n - s.step
        more = min(cap, max(0.0, (left - val_s) / max(step_s, 1e-9)))
        more = min(cap, max(0.0, (left - math.ceil(more / n) * val_s) / max(step_s, 1e-9)))  # a validation an epoch
        fit = s.step + int(more)
        if fit >= cfg.epochs * n:
            return  # every epoch fits
        s.planned_steps = fit
        logger.info(
            "%s: a step takes %.2f s and a validation %.0f s, so the %g-minute budget holds %d of %d steps "
            "(%.2f of %d epochs): the schedule anneals over them",
            self.desc,
            step_s,
            val_s,
            cfg.max_minutes,
            fit,
            cfg.epochs * n,
            fit / n,
            cfg.epochs,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.scheduler = build_schedule(self.optimizer, cfg, fit)
        for _ in range(s.step):
            self.scheduler.step()
        self.parts["scheduler"] = self.scheduler

    def end_epoch(self) -> None:
        s, run = self.state, self.state.running
        n = max(run["batches"], 1)
        record = {"epoch": s.epoch + 1, "train_loss": round(run["loss"] / n, 4)}
        if run["batches"] < len(self.loader):
            record["batches"] = run["batches"]  # the fitted schedule's last epoch, cut short
        record.update({k: round(v / n, 4) for k, v in run.items() if k not in ("loss", "batches", "seconds")})
        val = None
        if self.options.val_fn is not None:
            self.model.eval()
            with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
                val = float(self.options.val_fn(self.model, self.device))
            self.model.train()
            record["val_loss"] = round(val, 4)
        record["lr"] = self.scheduler.get_last_lr()[0]
        record["seconds"] = round(run["seconds"], 1)
        monitored = val if val is not None else run["loss"] / n
        s.history.append(record)
        s.epoch, s.batch, s.running = s.epoch + 1, 0, {"loss": 0.0, "batches": 0, "seconds": 0.0}
        logger.info("%s epoch %d: %s", self.desc, record["epoch"], record)
        if s.best is None or monitored < s.best:
            s.best, s.best_epoch, s.since_best = monitored, record["epoch"], 0
            if self.options.on_best is not None:
                self.options.on_best(self.model, record)
        else:
            s.since_best += 1
