"""Single flight: one fetch per block, in this process and across processes.

``SingleFlight.do(key, fn)`` runs ``fn`` once for any number of concurrent
callers with the same key; the others wait and get the same result, or the
same exception. Nothing is remembered once the call ends, so the next caller
after a failure tries again.

``FileLock`` is an exclusive ``fcntl.flock`` on a lock file. flock belongs to
the open file description, so two ``FileLock`` s on the same path exclude each
other across processes and across threads of one process. If the lock file
cannot be opened (read-only or full cache dir), the lock degrades to a no-op:
a block may then be fetched twice by two processes, never served wrong.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Collapse concurrent calls with the same key into one. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[T]] = {}

    def in_flight(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._calls

    def do(self, key: Hashable, fn: Callable[[], T]) -> T:
        """Run ``fn`` (no lock held) unless a call for ``key`` is running; then wait for it."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[return-value]
        try:
            call.result = fn()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return call.result


class FileLock:
    """``with FileLock(path):`` holds an exclusive flock on ``path`` (created 0600)."""

    __slots__ = ("_path", "_fd")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            try:
                os.makedirs(self._path.parent, mode=0o700, exist_ok=True)
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                logger.debug("no lock file %s: %s", self._path, exc)
                return self
        except OSError as exc:
            logger.debug("no lock file %s: %s", self._path, exc)
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
