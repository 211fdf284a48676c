"""The usage ledger: the cache directory's accounted bytes, one number shared by every process using it.

Each process (each mount, and ``wfs cache prune|clear``) keeps its own index of
the blocks it knows; the cap is for the directory, so the total lives on disk:
``<root>/usage`` holds one fixed-length line, read and rewritten only under an
exclusive ``flock`` on that file (``Ledger.transaction``; a thread lock makes
the threads of one ``Ledger`` take turns too).

What it counts: the charge (``layout.charge_bytes``) of every block file in
the directory, plus the charge of every block a live process has reserved and
is fetching or writing. So, for every process:

- A writer reserves a block's charge under the lock *before* fetching and
  writing it, after making room (``total + charge <= max_bytes``, evicting if
  needed) in the same transaction; a failed fetch or write gives it back.
  Nobody can slip in between the check and the addition, so the accounted
  bytes of the directory never exceed the cap of whoever writes. (Adding at
  rename time instead would let two processes both pass the check for the
  last free room, and would under-count if killed between the rename and the
  addition.) Adopting a block another process wrote adds nothing.
- A charge is subtracted only by the process whose ``unlink`` of the block
  file succeeded. ``ENOENT`` means another process removed it and already
  subtracted; the block is then simply forgotten.
- Blocks are removed to make room only under the lock, so a directory scan
  done while holding it never sees more than the total.

Drift, and how it is repaired: a process killed after reserving and before
renaming its block into place leaves the charge counted (an over-count: the
cap holds, the cache is a little smaller than it could be). Files removed by
hand, or by a startup repair of damaged blocks, are over-counted the same
way. The ledger is recounted from a directory scan (stat only) when the file
is missing or unreadable, and by every process that starts while no other
process uses the directory: each holds a shared ``flock`` on ``<root>/users``
for its lifetime (``UsersLock``); one that can take it exclusively (under
``maint.lock``, so two starting processes take turns) is alone, nothing is
being written, and the scan is exact. A recount while others are writing
misses their blocks in flight (an under-count of at most those) until the
next start alone.

If the file cannot be opened, locked or written (read-only or broken
directory), the process keeps the total in memory: the cap then holds for
its own writes only, as it did before the ledger existed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

USAGE_NAME = "usage"
USERS_NAME = "users"
_MAGIC = b"wfs-usage 1 "
_RECORD_BYTES = len(_MAGIC) + 20 + 1


def encode(total: int) -> bytes:
    return _MAGIC + b"%020d\n" % max(0, total)


def decode(raw: bytes) -> int | None:
    """The total in a ledger record, or ``None`` if it is not one (missing, torn, foreign)."""
    if len(raw) != _RECORD_BYTES or not raw.startswith(_MAGIC) or not raw.endswith(b"\n"):
        return None
    digits = raw[len(_MAGIC) : -1]
    return int(digits) if digits.isdigit() else None


def read_usage(root: Path) -> int | None:
    """The ledger's total (under a shared flock), or ``None`` if there is none or it is unreadable."""
    try:
        fd = os.open(Path(root) / USAGE_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return decode(os.pread(fd, _RECORD_BYTES + 1, 0))
    except OSError:
        return None
    finally:
        os.close(fd)


class Transaction:
    """The ledger's total while the lock is held; set ``total`` to change it."""

    __slots__ = ("total", "recounted")

    def __init__(self, total: int, recounted: bool) -> None:
        self.total = total
        self.recounted = recounted  # the stored value was missing or unreadable: ``total`` is a fresh count


class Ledger:
    """``with ledger.transaction() as txn:`` reads the shared total, locked; a changed ``txn.total`` is written back.

    ``recount()`` is called (lock held) when the stored total is missing or
    unreadable; it must not take this ledger again. Transactions do not nest.
    """

    def __init__(self, root: Path, recount: Callable[[], int]) -> None:
        self.path = Path(root) / USAGE_NAME
        self._recount = recount
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._memory: int | None = None  # last total seen; the only one once the file failed
        self._broken = False

    @contextmanager
    def transaction(self, recount: Callable[[], int] | None = None) -> Iterator[Transaction]:
        with self._lock:
            fd = None if self._broken else self._lock_file()
            stored = None
            oversized = False
            if fd is not None:
                try:
                    raw = os.pread(fd, _RECORD_BYTES + 1, 0)
                    stored, oversized = decode(raw), len(raw) > _RECORD_BYTES
                except OSError:
                    stored = None
            elif self._memory is not None:
                stored = self._memory
            try:
                if stored is None:
                    txn = Transaction((recount or self._recount)(), True)
                    before = None
                else:
                    txn = Transaction(stored, False)
                    before = stored
                try:
                    yield txn
                finally:
                    txn.total = max(0, txn.total)
                    self._memory = txn.total
                    if fd is not None and txn.total != before:
                        self._write(fd, txn.total, oversized)
            finally:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    except OSError:
                        pass
                    if self._broken:  # the write failed: from now on, the total in memory
                        self._close_fd()

    def close(self) -> None:
        with self._lock:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _lock_file(self) -> int | None:
        """Open (once) and lock the ledger file; re-open it if it was removed meanwhile."""
        for _attempt in range(3):
            if self._fd is None:
                try:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError as exc:
                    self._fail(f"cannot open it ({exc})")
                    return None
            fd = self._fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                self._fail(f"cannot lock it ({exc})")
                self._close_fd()
                return None
            try:
                if os.fstat(fd).st_nlink:  # still the file named ``usage`` (a new one is made only after a removal)
                    return fd
            except OSError:
                pass
            self._close_fd()  # removed meanwhile: release it, open the new one
        self._fail("it keeps being removed")
        return None

    def _write(self, fd: int, total: int, truncate: bool) -> None:
        record = encode(total)
        try:
            if os.pwrite(fd, record, 0) != len(record):
                raise OSError("short write")
            if truncate:
                os.ftruncate(fd, len(record))
        except OSError as exc:
            self._fail(f"cannot write it ({exc})")

    def _fail(self, why: str) -> None:
        if not self._broken:
            logger.warning("cache usage ledger %s: %s; this process now enforces the cap on its own writes only",
                           self.path, why)
        self._broken = True


class UsersLock:
    """Membership of the processes using a cache directory: a shared flock on ``<root>/users``.

    ``join()`` must be called holding ``maint.lock``; it returns ``True`` if no
    other process is a member (the lock is then held exclusively until
    ``share()``, also under ``maint.lock``). ``leave()`` releases it.
    """

    def __init__(self, root: Path) -> None:
        self._path = Path(root) / USERS_NAME
        self._fd: int | None = None

    def join(self) -> bool:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            logger.debug("no users lock %s: %s", self._path, exc)
            return False
        self._fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError as exc:
            logger.debug("cannot lock %s: %s", self._path, exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:
            logger.debug("cannot lock %s: %s", self._path, exc)
        return False

    def share(self) -> None:
        """Turn an exclusive hold into a shared one (not atomic: hold ``maint.lock`` meanwhile)."""
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_SH)
            except OSError as exc:
                logger.debug("cannot lock %s: %s", self._path, exc)

    def leave(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
