"""Many users of the models at once, or one model load alone.

Loading a model builds its feature extractor with torch.fx, whose tracing patches
``torch.nn.Module.__call__`` for the whole process: a forward pass on another thread meanwhile
fails. So describes share the gate and a model load closes it, waiting for those in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Gate:
    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._closed = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()
