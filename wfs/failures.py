"""Logs each failed file operation once, with its path and cause.

A program that retries (``ls`` in a loop, a shell prompt stat-ing ``$PWD``)
would otherwise write the same line thousands of times while W&B is down.
``report(op, path, exc, code)`` writes one line per distinct (path, errno,
cause kind) per ``interval_seconds``, counting what it held back; "no such
file" answers are normal traffic and go to DEBUG only.

Invariant: messages hold the path and the exception's text, which the client
keeps free of keys and signed-URL queries; never a traceback except for
errors ``errno_map`` does not know (it logs those itself).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time

from cachetools import LRUCache

logger = logging.getLogger("wfs.fuse")

REPEAT_INTERVAL_SECONDS = 60.0


class FailureLog:
    def __init__(self, interval_seconds: float = REPEAT_INTERVAL_SECONDS, clock=time.monotonic) -> None:
        self._interval = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: LRUCache = LRUCache(maxsize=4096)  # key -> [last_logged_at, held_back]

    def report(self, op: str, path: str, exc: BaseException, code: int) -> None:
        if code == errno.ENOENT:
            logger.debug("%s %s: %s", op, path, os.strerror(code))
            return
        key = (path, code, type(exc).__name__)
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self._interval:
                entry[1] += 1
                return
            held = entry[1] if entry is not None else 0
            self._seen[key] = [now, 0]
        suffix = f" ({held} more like it held back)" if held else ""
        logger.warning("%s %s failed with %s: %s%s", op, path, errno.errorcode.get(code, code), exc, suffix)


failure_log = FailureLog()
