"""The engine's memory of recent queries, so a shopper can edit attributes without sending the photo again.

A search's description (the costly part: decoding the photo, the attribute model, the detector,
the appearance network) is kept under a random id for ``ttl_s`` seconds, at most ``capacity`` of
them, the oldest dropped first; a re-run with the id refreshes its time. Nothing is written to
disk: a restarted server has forgotten every id, and the client sends the photo again.

Why the server keeps it rather than the client sending the description back: the description
holds the appearance code and the colour histogram, which a client could forge or corrupt, and
the API would have to document and check them; an id is 16 characters and cannot be wrong in a
way that reaches the index.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Callable

ID_CHARS = 16  # secrets.token_urlsafe(12): 96 random bits in URL-safe base64
ID_PATTERN = r"^[A-Za-z0-9_-]{16}$"


class RecentQueries:
    """A bounded, time-limited, thread-safe map from query ids to what was described."""

    def __init__(self, *, capacity: int = 1000, ttl_s: float = 600.0, clock: Callable[[], float] = time.monotonic):
        if capacity < 1 or ttl_s <= 0:
            raise ValueError(f"capacity and ttl_s must be positive, got {capacity}, {ttl_s}")
        self.capacity, self.ttl_s, self._clock = capacity, ttl_s, clock
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[str, tuple[float, object]] = collections.OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._items)

    def _expire(self, now: float) -> None:
        while self._items:
            key, (stamp, _v) = next(iter(self._items.items()))
            if now - stamp < self.ttl_s:
                break
            del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def put(self, value) -> str:
        """Keep ``value``; returns its new id."""
        key = secrets.token_urlsafe(12)
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._items[key] = (now, value)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str):
        """The value kept under ``key`` (its time refreshed), or None when unknown or expired."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            found = self._items.pop(key, None)
            if found is None:
                return None
            self._items[key] = (now, found[1])  # to the young end
            return found[1]
