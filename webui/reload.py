"""Live re-indexing: a thread that asks the engine, every few seconds, to load the index anew once a
bulk run into its directory has finished (``Engine.refresh``), so a server never needs a restart."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

DEFAULT_RELOAD_S = 2.0


class IndexWatcher:
    """Calls ``engine.refresh()`` every ``interval_s`` seconds on a daemon thread until ``stop()``.

    A failed refresh is logged and tried again at the next tick: the old index keeps serving.
    """

    def __init__(self, engine, interval_s: float = DEFAULT_RELOAD_S):
        if not interval_s > 0:
            raise ValueError(f"the reload interval must be a positive number of seconds, got {interval_s!r}")
        self.engine, self.interval_s = engine, float(interval_s)
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-watcher", daemon=True)

    def start(self) -> IndexWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.engine.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the old index keeps serving; say why and retry
                self.last_error = f"{exc.__class__.__name__}: {str(exc)[:300]}"
                logger.warning("cannot load the re-built index (the old one keeps serving): %s", self.last_error)
