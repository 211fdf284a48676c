"""Deterministic fault injection for the test server.

Each target (``graphql``, ``files``, ``storage``) has its own settings and its
own ``random.Random`` seeded from ``(seed, target)``, drawn once per request
in arrival order: the same request sequence always meets the same faults.
``error_count``/``rate_limit_count`` fail exactly the next N requests (before
any random draw), which is the easiest way to test retries.

Decision order per request: latency (always applied), then 500, then 429,
then (storage bodies only) truncation.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

TARGETS = ("graphql", "files", "storage")


@dataclass
class FaultSpec:
    error_rate: float = 0.0  # fraction answered 500
    rate_limit_rate: float = 0.0  # fraction answered 429
    retry_after_seconds: float = 1.0  # Retry-After / RateLimit-Reset of a 429
    truncate_rate: float = 0.0  # fraction of storage bodies cut short
    latency_seconds: float = 0.0  # added before every answer
    error_count: int = 0  # the next N requests answered 500
    rate_limit_count: int = 0  # the next N requests answered 429
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)


@dataclass(frozen=True)
class Decision:
    latency_seconds: float = 0.0
    status: int | None = None  # 500 or 429 when the request must fail
    retry_after_seconds: float = 0.0
    truncate: bool = False


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs = {t: FaultSpec() for t in TARGETS}

    def set(self, *, targets=None, seed: int = 0, **settings) -> None:
        """Replace the settings of ``targets`` (default: all) with ``settings``."""
        names = [targets] if isinstance(targets, str) else list(targets or TARGETS)
        for name in names:
            if name not in TARGETS:
                raise ValueError(f"unknown fault target {name!r}; expected one of {TARGETS}")
        with self._lock:
            for name in names:
                spec = FaultSpec(**settings)
                spec.rng = random.Random(f"{seed}:{name}")
                self._specs[name] = spec

    def describe(self) -> dict:
        with self._lock:
            return {
                t: {k: v for k, v in vars(s).items() if k != "rng"} for t, s in self._specs.items()
            }

    def decide(self, target: str) -> Decision:
        with self._lock:
            s = self._specs[target]
            status = None
            if s.error_count > 0:
                s.error_count -= 1
                status = 500
            elif s.rate_limit_count > 0:
                s.rate_limit_count -= 1
                status = 429
            else:
                # Always draw all three so one rate never shifts another's sequence.
                r_err, r_429, r_cut = s.rng.random(), s.rng.random(), s.rng.random()
                if r_err < s.error_rate:
                    status = 500
                elif r_429 < s.rate_limit_rate:
                    status = 429
                truncate = status is None and r_cut < s.truncate_rate
                return Decision(s.latency_seconds, status, s.retry_after_seconds, truncate)
            return Decision(s.latency_seconds, status, s.retry_after_seconds, False)
