"""Thread-safe request counters of the test server, for tests and benchmarks.

Invariant: every counter only grows until ``reset``; ``snapshot`` returns deep
copies, so a caller can never see (or cause) a half-updated dict. Control
endpoints (``/_wfs/...``) are never counted.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter

_SCALARS = (
    "graphql_requests",
    "file_url_requests",
    "storage_requests",
    "range_requests",
    "bytes_served",
    "storage_auth_headers",
)
_MAPS = ("graphql_ops", "graphql_operations", "bytes_by_file", "status_counts")


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._data: dict = {name: 0 for name in _SCALARS}
            self._data.update({name: Counter() for name in _MAPS})

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._data[name] += amount

    def add_to(self, name: str, key, amount: int = 1) -> None:
        with self._lock:
            self._data[name][key] += amount

    def snapshot(self) -> dict:
        with self._lock:
            out = copy.deepcopy(self._data)
        for name in _MAPS:
            out[name] = dict(out[name])
        return out
