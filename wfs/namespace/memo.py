"""A small metadata memo: per-entry expiry, single flight, stale on outage.

* An entry is served until its own expiry (``math.inf`` for immutable data),
  never past it while the server answers.
* However many threads ask for the same missing or expired key at once, the
  loader runs once; the others wait for its result (or its exception).
* When the loader fails with a ``TransientError`` (server down, 5xx after
  retries) and an expired value is still known, the stale value is served:
  what was listed stays listable while W&B cannot be reached.
* Bounded: at most ``maxsize`` entries, least recently used dropped first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, Generic, Hashable, TypeVar

from cachetools import LRUCache

from wfs.client.errors import TransientError

logger = logging.getLogger(__name__)

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, maxsize: int = 4096, clock: Callable[[], float] = time.monotonic):
        self._entries: LRUCache = LRUCache(maxsize=maxsize)  # key -> (value, expires_at)
        self._pending: set[Hashable] = set()
        self._cond = threading.Condition()
        self._clock = clock

    def get(self, key: Hashable, load: Callable[[], V], ttl: Callable[[V], float]) -> V:
        """Return the fresh value for ``key``, loading it at most once at a time.

        ``ttl(value)`` gives the seconds the value stays fresh (``math.inf``
        for immutable values).
        """
        with self._cond:
            while key in self._pending:
                self._cond.wait()
            entry = self._entries.get(key)
            if entry is not None and entry[1] > self._clock():
                return entry[0]
            self._pending.add(key)
        try:
            value = load()
            expires = self._clock() + ttl(value)
        except TransientError as exc:
            if entry is None:
                self._done(key)
                raise
            logger.warning("serving stale metadata for %s: %s", key, exc)
            value = entry[0]
            expires = self._clock() + 1.0  # ask again soon, not on every call
        except BaseException:
            self._done(key)
            raise
        self._done(key, (value, expires))
        return value

    def _done(self, key: Hashable, entry: tuple | None = None) -> None:
        with self._cond:
            if entry is not None:
                self._entries[key] = entry
            self._pending.discard(key)
            self._cond.notify_all()

    def peek(self, key: Hashable, *, expired: bool = False) -> V | None:
        """The value if present and fresh (or, with ``expired``, even past its TTL), without loading."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is not None and (expired or entry[1] > self._clock()):
                return entry[0]
            return None

    def put(self, key: Hashable, value: V, ttl_seconds: float = math.inf) -> None:
        with self._cond:
            self._entries[key] = (value, self._clock() + ttl_seconds)

    def invalidate(self, key: Hashable) -> None:
        with self._cond:
            self._entries.pop(key, None)
