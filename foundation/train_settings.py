"""How a model is trained: the loop's settings (``LoopConfig``) and each trainer's config
(``TrainSettings``: the run settings every trainer shares, its presets, and the ``LoopConfig`` and
learning settings it gives the loop, written here once). ``foundation.training`` runs the loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from foundation.devices import check_device

RUN_SETTINGS = ("max_minutes", "finish_epoch", "max_steps", "device", "amp", "threads", "checkpoint")
T = TypeVar("T")


@dataclass(frozen=True)
class LoopConfig:
    """How a model is trained. The fields in ``RUN_SETTINGS`` say where and how long a run goes and
    may differ on resume; the others are learning settings a resumed run must share."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    warmup_share: float = 0.0  # share of all steps spent warming up linearly ...
    warmup_steps: int = 0  # ... or this many steps (wins when above 0)
    clip_grad_norm: float | None = None
    patience: int | None = None  # stop after this many epochs without a better monitored loss
    seed: int = 0
    max_minutes: float | None = None  # time budget of this run (None: no limit)
    finish_epoch: bool = False  # when the budget runs out mid-epoch, finish (and validate) that epoch
    max_steps: int | None = None  # steps this run may take (smoke runs); the schedule still spans all epochs
    device: str = "auto"
    amp: bool = True  # mixed precision, on CUDA only
    threads: int = 2
    checkpoint: bool = True  # write the resumable checkpoint after every epoch and when stopping

    def __post_init__(self) -> None:
        for name, least in (("epochs", 1), ("threads", 1), ("warmup_steps", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be at least {least}, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.warmup_share < 1.0:
            raise ValueError(f"warmup_share must lie in [0, 1), got {self.warmup_share!r}")
        for name in ("max_minutes", "clip_grad_norm", "patience", "max_steps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        check_device(self.device)

    def learning_settings(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_SETTINGS}


LOOP_FIELDS = frozenset(f.name for f in dataclasses.fields(LoopConfig))


@dataclass(frozen=True)
class TrainSettings:
    """A trainer's config: the run settings every trainer shares, its presets and what the loop gets.

    A trainer subclasses this as a frozen dataclass and declares its own fields (a field named as
    one of ``LoopConfig``'s is that loop setting; ``resume_checkpoint`` is its ``checkpoint``) and,
    at class level, ``TRAINS`` (what it trains, for messages), ``PRESET_FIELDS`` (each preset's
    fields that differ from the class's defaults), ``RUN_SETTINGS`` extended by its own run
    settings (they stay out of its learning settings) and ``FIXED_LOOP`` (loop settings that are
    not fields). A subclass's ``__post_init__`` checks its own fields, then calls this one, which
    checks the loop's settings.
    """

    max_minutes: float | None = None  # this run's time budget (None: no limit)
    device: str = "auto"  # auto, cpu, cuda or cuda:N ("auto": cuda when there is one)
    amp: bool = True  # mixed precision, on cuda only
    threads: int = 2
    workers: int = 0  # loader processes
    seed: int = 0

    TRAINS: ClassVar[str] = "model"
    PRESET_FIELDS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # where and how long a run goes, and whether it writes its checkpoint: a resumed run may change these
    RUN_SETTINGS: ClassVar[tuple[str, ...]] = (
        "max_minutes",
        "device",
        "amp",
        "threads",
        "workers",
        "resume_checkpoint",
    )
    FIXED_LOOP: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        self.loop_config()  # checks the loop's settings

    @classmethod
    def preset(cls, name: str, **overrides) -> Self:
        """The preset ``name`` with ``overrides``; an unknown name lists those there are."""
        return cls(**{**pick_preset(cls.PRESET_FIELDS, name, cls.TRAINS), **overrides})

    @classmethod
    def presets(cls) -> dict[str, Self]:
        return {name: cls.preset(name) for name in cls.PRESET_FIELDS}

    @classmethod
    def demo(cls, **overrides) -> Self:
        """The demo's preset: a few minutes on a 2-core CPU."""
        return cls.preset("demo", **overrides)

    def loop_config(self) -> LoopConfig:
        names = {f.name for f in dataclasses.fields(self)}
        values = {name: getattr(self, name) for name in names & LOOP_FIELDS}
        if "resume_checkpoint" in names:
            values["checkpoint"] = self.resume_checkpoint
        return LoopConfig(**values, **self.FIXED_LOOP)

    def learning_settings(self) -> dict:
        """What a resumed run must share with the first, beside the loop's own settings."""
        skip = LOOP_FIELDS | set(self.RUN_SETTINGS)
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def pick_preset(presets: Mapping[str, T], name: str, what: str) -> T:
    """``presets[name]``, or an error listing the presets there are."""
    if name not in presets:
        raise ValueError(f"unknown {what} preset {name!r}; choose from {', '.join(sorted(presets))}")
    return presets[name]
