"""The served index and its hot swap: a search reads the old index or the new one, never a
half-built one, and never fails for the swap."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from search.protocol import SearchIndex


def alive(pid) -> bool:
    """Whether a process of this id runs (a bulk run's ``progress.json`` names its own)."""
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class LiveIndex:
    """An index that searches read under a lock while a new one may be swapped in.

    Args:
        index: the index served now.
        built: the store's count of finished bulk runs it holds.
    """

    def __init__(self, index: SearchIndex, built: int = 0):
        self.index = index
        self.built = built
        self.reloads: list[dict] = []  # the latest swaps, newest last
        self._lock = threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[SearchIndex]:
        """The index, held still while it is read or changed in place."""
        with self._lock:
            yield self.index

    def swap(self, index: SearchIndex, built: int, also: Callable[[], None] | None = None) -> tuple[SearchIndex, float]:
        """Serve ``index`` from now on; ``also`` runs in the same instant (new models, say). Returns the
        old index and how long the swap held the lock (ms)."""
        t0 = time.perf_counter()
        with self._lock:
            old, self.index, self.built = self.index, index, built
            if also is not None:
                also()
        return old, (time.perf_counter() - t0) * 1e3

    def record(self, reload: dict) -> None:
        self.reloads = [*self.reloads[-9:], reload]

    def status(self, progress: dict | None) -> dict:
        """The index served and the bulk run into its directory, as its ``progress.json`` says."""
        if progress and progress.get("state") == "running" and not alive(progress.get("pid")):
            progress = {**progress, "state": "stopped"}  # killed: a re-run resumes it
        return {
            "products": len(self.index),
            "photos": self.index.photo_count(),
            "built": self.built,
            "reloads": self.reloads[-3:],
            "indexing": progress,
        }
