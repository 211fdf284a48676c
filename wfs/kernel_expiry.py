"""Per-path lifetimes for what the kernel caches, on top of libfuse's one global timeout.

libfuse's path API gives every entry and attribute the same kernel timeout.
wfs knows better: a finished run's files never change, a running run's change
by the second, and project or run lists by the minute. So the mount hands the
kernel a long timeout, and this module remembers, for each path the kernel
was told about that can change, when that knowledge goes stale; a thread then
asks the kernel to forget it (``invalidate(path)``), and the next ``stat``
comes back to the daemon, which answers from W&B or its memo.

What stays true:

* a path is invalidated no later than its own TTL after the daemon last
  described it (``touch``); immutable paths are never tracked;
* invalidation happens outside every lock, on one thread, and stops for good
  (``stop``) before the mount's session ends, or once the kernel says the
  mount is gone;
* memory is one entry per changeable path the kernel has seen recently.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from typing import Callable

logger = logging.getLogger(__name__)


class KernelExpiry:
    def __init__(self, invalidate: Callable[[str], int], gone: Callable[[int], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._invalidate = invalidate
        self._gone = gone
        self._clock = clock
        self._due: dict[str, float] = {}  # path -> when the kernel's copy goes stale
        self._heap: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.invalidated = 0

    def touch(self, path: str, ttl: float) -> None:
        """The kernel was just told about ``path``; that stays true for ``ttl`` seconds."""
        if math.isinf(ttl):
            return
        deadline = self._clock() + ttl
        with self._cond:
            if self._stopped:
                return
            self._due[path] = deadline
            heapq.heappush(self._heap, (deadline, path))
            if self._heap[0][1] == path:
                self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wfs-kernel-expiry", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """No invalidation runs after this returns (unless it timed out waiting on the kernel)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_seconds)

    def _take_due(self) -> list[str] | None:
        """Wait until some paths are due; None once stopped."""
        with self._cond:
            while not self._stopped:
                now = self._clock()
                if self._heap and self._heap[0][0] <= now:
                    due = []
                    while self._heap and self._heap[0][0] <= now:
                        deadline, path = heapq.heappop(self._heap)
                        if self._due.get(path) == deadline:  # else touched again since
                            del self._due[path]
                            due.append(path)
                    if due:
                        return due
                    continue
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _run(self) -> None:
        while (due := self._take_due()) is not None:
            for path in due:
                with self._cond:
                    if self._stopped:
                        return
                code = self._invalidate(path)
                if self._gone(code):
                    logger.debug("mount gone (%d); no more kernel invalidations", code)
                    with self._cond:
                        self._stopped = True
                    return
                self.invalidated += 1
