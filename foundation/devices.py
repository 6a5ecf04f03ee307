"""Where a model runs: one spelling of device names for every trainer and loader.

Accepted names are exactly ``auto`` (cuda when torch sees a GPU, else cpu), ``cpu``, ``cuda``
and ``cuda:N``. ``check_device`` checks only the spelling (configs call it on construction,
without touching CUDA); ``parse_device`` also checks that the GPU asked for is there.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_NAME = re.compile(r"auto|cpu|cuda(?::(\d+))?")


def check_device(name: str) -> str:
    """``name`` when it is a device name this project accepts; a ValueError naming it otherwise."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(f"unknown device {name!r}; use {DEVICE_NAMES}")
    return name


def parse_device(name: str) -> torch.device:
    """The torch device ``name`` stands for; a clear error when it names a GPU torch does not see."""
    import torch  # here, so that configs can check a name without importing torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but torch sees no CUDA GPU here; use cpu or auto")
    index = int(_NAME.fullmatch(name).group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {name!r} was asked for, but torch sees {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
        )
    return torch.device(name)
