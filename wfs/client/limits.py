"""Bounds on the client's calls: a deadline per call, a request budget, a circuit breaker.

Job: make sure no client call (and so no FUSE call) waits without bound,
that wfs stays inside W&B's per-key request budget however hard ``find`` or
``cp -r`` push, and that once W&B is seen down, calls fail at once instead of
each spending the whole retry budget.

* ``Deadline``: the wall-clock budget of one client call. Retries, backoff
  sleeps, waiting for a token and every attempt's connect/read timeouts all
  come out of it; nothing waits past it.
* ``TokenBucket``: on average at most ``rate_per_second`` requests, bursts of
  up to ``burst`` (what rclone's ``--tpslimit``/``--tpslimit-burst`` do).
  Tokens are reserved in arrival order; a caller that could only get one
  after its deadline is refused at once (``BudgetExceeded``) and takes none.
  A rate of 0 means no limit.
* ``CircuitBreaker``: after a host was found unreachable, calls to it raise
  ``Unreachable`` at once for ``cooldown_seconds``; then exactly one probe
  call is let through: an answer closes the breaker, a failure re-opens it.
  A probe that ends any other way frees the slot for the next caller.
* ``call_scope`` puts the current call's ``CallContext`` in a ``ContextVar``
  so urllib3's retry loop (``wfs.client.http.WfsRetry``) and the per-attempt
  timeout (``DeadlineTimeout``) see the same deadline and bucket. Nested
  scopes share the outer deadline.

All classes are thread-safe; clocks and sleeps are injectable for tests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from urllib3.util.timeout import Timeout

from wfs.client.errors import TransientError, Unreachable

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
MIN_ATTEMPT_SECONDS = 0.05  # an attempt started with less time than this left still gets this much


class BudgetExceeded(TransientError):
    """No request token could be had before the call's deadline."""


class Deadline:
    """A point in time a call must finish by; ``seconds`` <= 0 or inf means no limit."""

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = float(seconds) if seconds and seconds > 0 else math.inf
        self._clock = clock
        self._end = clock() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self._end

    def __repr__(self) -> str:
        return f"Deadline({self.seconds}s, {self.remaining():.2f}s left)"


class TokenBucket:
    """Requests per second with bursts; see the module docstring."""

    def __init__(
        self, rate_per_second: float, burst: float = 1.0, *, clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate_per_second = max(0.0, float(rate_per_second))
        self.burst = max(1.0, float(burst))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()
        self.waited_seconds = 0.0  # total time callers spent waiting, for stats

    @property
    def unlimited(self) -> bool:
        return self.rate_per_second <= 0

    def _refill_locked(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_second)
        self._last = now

    def acquire(self, deadline: Deadline | None = None) -> float:
        """Take one token, waiting for it if needed; return the seconds waited.

        Raises ``BudgetExceeded`` (taking nothing) when the token would only
        come after ``deadline``.
        """
        if self.unlimited:
            return 0.0
        with self._lock:
            self._refill_locked()
            wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate_per_second
            if deadline is not None and wait > deadline.remaining():
                raise BudgetExceeded(
                    f"request budget ({self.rate_per_second:g}/s) has no room within the call's "
                    f"{deadline.seconds:g}s limit"
                )
            self._tokens -= 1.0  # reserved: later callers queue behind us
            self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass
class _HostState:
    open_until: float
    reason: str
    probing: bool = False


class CircuitBreaker:
    """Fail fast on a host recently found unreachable; see the module docstring."""

    def __init__(self, cooldown_seconds: float, *, clock: Clock = time.monotonic) -> None:
        self.cooldown_seconds = max(0.0, float(cooldown_seconds))
        self._clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, _HostState] = {}

    def check(self, host: str) -> bool:
        """Let a call to ``host`` go ahead (True: it is the probe), or raise ``Unreachable``."""
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                return False
            now = self._clock()
            if now >= state.open_until and not state.probing:
                state.probing = True
                return True
            wait = max(0.0, state.open_until - now)
            reason = state.reason
        retry = f"next try in {wait:.0f}s" if wait >= 1 else "being retried"
        raise Unreachable(f"{host} was unreachable moments ago ({reason}); failing fast, {retry}")

    def success(self, host: str) -> None:
        with self._lock:
            state = self._hosts.pop(host, None)
        if state is not None:
            logger.warning("%s answers again; leaving offline mode for it", host)

    def failure(self, host: str, reason: str) -> None:
        with self._lock:
            known = host in self._hosts
            self._hosts[host] = _HostState(self._clock() + self.cooldown_seconds, reason)
        if not known and self.cooldown_seconds > 0:
            logger.warning("%s is unreachable (%s); failing fast for %gs", host, reason, self.cooldown_seconds)

    def release(self, host: str, probe: bool) -> None:
        """The call ended without telling whether the host answers: free the probe slot."""
        if not probe:
            return
        with self._lock:
            state = self._hosts.get(host)
            if state is not None:
                state.probing = False

    def is_down(self, host: str) -> bool:
        """True from a failure until the next call that gets an answer."""
        with self._lock:
            return host in self._hosts

    def is_open(self, host: str) -> bool:
        with self._lock:
            state = self._hosts.get(host)
            return state is not None and (self._clock() < state.open_until or state.probing)


@dataclass
class CallContext:
    """What one client call may spend: its deadline and the bucket of the request in progress."""

    deadline: Deadline
    bucket: TokenBucket | None = None


_CURRENT: ContextVar[CallContext | None] = ContextVar("wfs_client_call", default=None)


def current() -> CallContext | None:
    return _CURRENT.get()


@contextmanager
def call_scope(seconds: float, clock: Clock = time.monotonic) -> Iterator[CallContext]:
    """The context of one client call; an enclosing call's deadline is kept."""
    outer = _CURRENT.get()
    if outer is not None:
        saved = outer.bucket
        try:
            yield outer
        finally:
            outer.bucket = saved
        return
    ctx = CallContext(Deadline(seconds, clock))
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


class DeadlineTimeout(Timeout):
    """urllib3 ``Timeout`` whose every attempt (urllib3 clones it per attempt) ends by the deadline."""

    def __init__(self, connect: float, read: float, deadline: Deadline) -> None:
        super().__init__(connect=connect, read=read)
        self._deadline = deadline

    def clone(self) -> Timeout:
        left = self._deadline.remaining()
        if math.isinf(left):
            return Timeout(connect=self._connect, read=self._read)
        left = max(MIN_ATTEMPT_SECONDS, left)
        return Timeout(connect=min(self._connect, left), read=min(self._read, left), total=left)
