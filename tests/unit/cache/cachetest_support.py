"""Helpers for the block-cache tests: a fake remote object whose fetch records calls."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
PERIOD = 65521  # prime, so block contents differ from one another


class FakeRemote:
    """A deterministic object of ``size`` bytes; ``__call__`` is a ``Fetch`` that records each call.

    Knobs: ``delay`` (seconds per call), ``gate`` (an Event each call waits for),
    ``fail`` (exception to raise), ``short``/``long`` (wrong lengths), ``corrupt``
    (flip a byte), ``on_call`` (callback with (start, end) before answering).
    """

    def __init__(self, size: int, *, seed: int = 0, delay: float = 0.0) -> None:
        self.size = size
        self._pattern = random.Random(seed).randbytes(PERIOD)
        self.delay = delay
        self.gate: threading.Event | None = None
        self.fail: BaseException | None = None
        self.short = False
        self.long = False
        self.corrupt = False
        self.on_call = None
        self.calls: list[tuple[int, int]] = []
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def content(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if end <= start:
            return b""
        offset = start % PERIOD
        reps = (offset + end - start) // PERIOD + 1
        return (self._pattern * reps)[offset : offset + end - start]

    def md5_b64(self) -> str:
        digest = hashlib.md5()
        for start in range(0, self.size, 8 * MIB):
            digest.update(self.content(start, start + 8 * MIB))
        return base64.b64encode(digest.digest()).decode()

    def __call__(self, start: int, end: int) -> bytes:
        assert 0 <= start < end <= self.size, (start, end, self.size)
        with self._lock:
            self.calls.append((start, end))
        self.entered.set()
        if self.on_call is not None:
            self.on_call(start, end)
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        data = self.content(start, end)
        if self.short:
            data = data[:-1]
        if self.long:
            data += b"x"
        if self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    @property
    def fetched_bytes(self) -> int:
        with self._lock:
            return sum(end - start for start, end in self.calls)

    def starts(self) -> Counter:
        with self._lock:
            return Counter(start for start, _ in self.calls)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)


def files_under(root: Path, suffix: str = "") -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(root) for n in names if n.endswith(suffix)]


def _lstat(path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:  # removed by a background write or eviction meanwhile
        return None


def dir_total(root: Path) -> int:
    """Sum of file sizes under root (what the cap must bound)."""
    return sum(st.st_size for p in files_under(root) if (st := _lstat(p)) is not None)


def du_bytes(root: Path) -> int:
    """Allocated bytes under root, files and directories, as du counts them."""
    total = 0
    for d, _dirs, names in os.walk(root):
        for path in [d, *(os.path.join(d, n) for n in names)]:
            st = _lstat(path)
            total += st.st_blocks * 512 if st is not None else 0
    return total


def accounted_bytes(root: Path) -> int:
    """The cache's accounting of the blocks on disk, scanned while holding the usage ledger's lock.

    Room is only made under that lock, so no block can be removed for another
    one during the scan: the sum is what was on disk at one moment (plus, at
    most, blocks whose room was already reserved).
    """
    import fcntl

    from wfs.cache import layout

    fd = os.open(Path(root) / "usage", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return disk_bytes(root)
    finally:
        os.close(fd)


def disk_bytes(root: Path) -> int:
    """The cache's accounting (``charge_bytes``) of the valid blocks on disk, from the startup scan."""
    from wfs.cache import layout

    found = layout.scan(Path(root), repair=False)
    return sum(layout.charge_bytes(length) for obj in found for _index, length, _mtime in obj.blocks)


def ledger_bytes(root: Path) -> int | None:
    """The shared usage ledger's total (``None`` if there is none)."""
    try:
        from wfs.cache.ledger import read_usage
    except ImportError:  # a wfs without the ledger
        return None

    return read_usage(Path(root))
