"""``BlockCache``: remote objects cut into fixed-size blocks, kept on local disk under a hard cap.

An object (identified by an opaque ``key`` and its ``size_bytes``) is cut into
blocks of ``block_size_bytes`` (the last one shorter). Each missing block is
fetched with one ``fetch(start, end)`` call, stored as one file (see
``layout``) and then served with ``os.pread``.

What stays true:

- A block is served from disk only if its file exists with exactly the
  expected length; a fetch returning any other length is never stored and
  raises ``CacheIntegrityError``. A one-block object with an md5 is checked
  before it is served; a larger one is checked in the background once all
  its blocks are present (mismatch: blocks discarded, refetched once, then
  ``CacheIntegrityError`` on every read).
- Accounted bytes (each block's allocation plus a share of its object's
  metadata) of the whole directory never exceed ``max_bytes``, however many
  processes share it: room is made, by deleting least recently used blocks,
  *before* a block is fetched and written, and the directory's total is kept
  in a shared ledger (``ledger``: reserved under its flock before the fetch,
  given back if the block is not written, subtracted only by whoever's
  ``unlink`` succeeded). Blocks pinned by a read in progress, or being
  fetched and written, are kept out of the LRU and are never evicted by this
  process (another process may remove them: a block that vanishes is a miss,
  fetched again).
- Eviction order is least recently used across the directory, by the block
  file's mtime (bumped when a block is written or, at most once a minute,
  read): the oldest of this process's LRU is compared with the oldest block
  only other processes know (remembered from a stat-only scan of the
  directory, redone when used up, at most every few seconds), and the older
  goes. A process that has only just started knows every block (its startup
  scan), so scans happen only when other processes have written since.
- A block is fetched once however many threads want it (``SingleFlight``) and,
  through a per-block ``flock``, however many processes share the directory;
  whoever waited re-checks the disk before fetching.
- When the disk refuses a write (ENOSPC, EDQUOT, EROFS, EACCES, ...), reads
  still get the fetched bytes, kept in a small memory LRU, and a rate-limited
  warning says why.

Thread safety and lock order (take left before right, never the reverse):

    maint.lock -> block flock (FileLock) -> _Object.verify_lock -> ledger -> BlockCache._lock -> SingleFlight._lock
    CachedFile._lock  ->  BlockCache._lock

``BlockCache._lock`` guards the index (``_lru``, ``_pins``, ``_objects`` and
the ``_Object`` fields, ``_mem``, ``_freed``, counters) and is held only for
dictionary work and unlinks. The ledger (its thread lock and flock) is held
to reserve room for a block, which may evict blocks (other processes' too;
their block flocks are then only *tried*, never waited for), and to subtract
what this process removed elsewhere (``_freed``, handed over by
``_flush_freed`` outside ``BlockCache._lock``, or by the next reservation).
A read of a block on disk never takes it. ``fetch`` is called with no thread
lock held (only the block's flock, which is what makes other processes wait),
and so is every block write and read.
"""

from __future__ import annotations

import base64
import concurrent.futures
import errno
import fcntl
import hashlib
import heapq
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from wfs.cache import layout
from wfs.cache.errors import CacheError, CacheIntegrityError
from wfs.cache.flight import FileLock, SingleFlight
from wfs.cache.ledger import Ledger, Transaction, UsersLock
from wfs.cache.readahead import ReadAhead

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

Fetch = Callable[[int, int], bytes]
BlockKey = tuple[str, int]  # (sha256 of the object key, block index)

# A block's mtime is bumped at most this often when it is read, so recency
# survives a restart approximately without a syscall per read.
TOUCH_INTERVAL_SECONDS = 60.0
# After a failed write, read-ahead is limited to one block for this long.
DISK_TROUBLE_SECONDS = 30.0
DISK_WARNING_INTERVAL_SECONDS = 60.0
# Fetched blocks the disk refused are kept in memory, this many at most.
MEMORY_FALLBACK_BLOCKS = 4
# Blocks only other processes know (eviction candidates), kept from one directory scan: the oldest this many.
FOREIGN_CANDIDATES = 1024
# The directory is scanned for them at most this often while this process has blocks of its own it could
# evict instead, and at most this often when it has none; each scan that finds none doubles both, up to
# FOREIGN_RESCAN_BACKOFF times (the ledger can count bytes no scan finds: other processes' blocks in flight,
# or drift), and one that finds some resets them.
FOREIGN_RESCAN_SECONDS = 5.0
FOREIGN_RESCAN_URGENT_SECONDS = 0.5
FOREIGN_RESCAN_BACKOFF = 64
_VERIFY_CHUNK_BYTES = 1 * MIB


def md5_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


@dataclass(frozen=True)
class CacheStats:
    used_bytes: int
    max_bytes: int
    objects: int
    blocks: int
    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0
    evictions: int = 0
    hit_rate: float = 0.0


class _Pin:
    """An index entry kept out of the LRU: read in progress (count) or write in progress (not written)."""

    __slots__ = ("count", "charge", "written")

    def __init__(self, charge: int, written: bool) -> None:
        self.count = 0
        self.charge = charge  # 0: not indexed (missing, or reserved and then dropped)
        self.written = written


class _Object:
    """In-memory state of one cached object. Fields are guarded by ``BlockCache._lock``."""

    def __init__(self, obj_hash: str, key: str, size_bytes: int, block_size_bytes: int, directory: Path) -> None:
        self.hash = obj_hash
        self.key = key
        self.directory = directory
        self.dir_prefix = str(directory) + os.sep
        self.md5: str | None = None
        self.verified = False
        self.fetch: Fetch | None = None
        self.present: set[int] = set()  # blocks whose file is whole on disk
        self.nindexed = 0  # blocks charged to the cap (present or being written)
        self.open_count = 0
        self.failed = False
        self.md5_failures = 0
        self.verifying = False
        self.meta_written = False
        self.meta_dirty = False
        self.verify_lock = threading.Lock()
        self.reset(size_bytes, block_size_bytes)

    def reset(self, size_bytes: int, block_size_bytes: int) -> None:
        self.size = size_bytes
        self.block_size = block_size_bytes
        self.nblocks = layout.block_count(size_bytes, block_size_bytes)

    def block_length(self, index: int) -> int:
        return layout.block_length(self.size, self.block_size, index)

    def block_path(self, index: int) -> str:
        return f"{self.dir_prefix}{index}{layout.BLOCK_SUFFIX}"

    def meta(self) -> layout.Meta:
        return layout.Meta(self.key, self.size, self.block_size, self.md5, self.verified)

    def describe(self) -> str:
        return f"{self.key!r} ({self.size} bytes)"


class _BlockLRU:
    """Unpinned, written blocks (key -> charge), least recently used first; ``currsize`` sums the charges.

    It never evicts by itself: the cap is the ledger's, and evictions go through ``BlockCache._evict_locked``.
    """

    __slots__ = ("_order", "currsize")

    def __init__(self) -> None:
        self._order: OrderedDict[BlockKey, int] = OrderedDict()
        self.currsize = 0

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def __setitem__(self, key: BlockKey, charge: int) -> None:
        """Insert or update ``key`` as the most recently used."""
        old = self._order.pop(key, None)
        if old is not None:
            self.currsize -= old
        self._order[key] = charge
        self.currsize += charge

    def __delitem__(self, key: BlockKey) -> None:
        self.currsize -= self._order.pop(key)

    def pop(self, key: BlockKey, default: int | None = None) -> int | None:
        charge = self._order.pop(key, None)
        if charge is None:
            return default
        self.currsize -= charge
        return charge

    def oldest(self) -> BlockKey | None:
        return next(iter(self._order), None)


class _Foreign:
    """A block on disk that this process does not index, found by a scan: an eviction candidate."""

    __slots__ = ("mtime_ns", "key", "charge", "path", "directory")

    def __init__(self, mtime_ns: int, key: BlockKey, charge: int, directory: Path) -> None:
        self.mtime_ns = mtime_ns
        self.key = key
        self.charge = charge
        self.directory = directory
        self.path = os.path.join(directory, layout.block_name(key[1]))


class _RateLimitedLog:
    """Log a warning per category at most once per interval, counting what was held back."""

    def __init__(self, interval_seconds: float) -> None:
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, category: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(category)
            if last is not None and now - last < self._interval:
                self._held[category] = self._held.get(category, 0) + 1
                return
            self._last[category] = now
            held = self._held.pop(category, 0)
        if held:
            msg += " (%d similar messages suppressed)"
            args = (*args, held)
        logger.warning(msg, *args)


class BlockCache:
    """A disk cache of object blocks with a hard byte cap, shared safely by threads and processes."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        block_size_bytes: int = 8 * MIB,
        *,
        readahead_max_bytes: int = 128 * MIB,
        max_workers: int = 8,
    ) -> None:
        if block_size_bytes <= 0 or max_bytes < 0 or max_workers <= 0:
            raise ValueError("block_size_bytes and max_workers must be positive, max_bytes non-negative")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.block_size_bytes = block_size_bytes
        self.readahead_max_bytes = readahead_max_bytes
        self._lock = threading.Lock()
        self._lru = _BlockLRU()
        self._pins: dict[BlockKey, _Pin] = {}
        self._pinned_bytes = 0
        self._freed = 0  # charges of block files this process removed, not yet subtracted from the ledger
        self._ledger = Ledger(self.root, self._recount)
        self._users = UsersLock(self.root)
        self._foreign: deque[_Foreign] = deque()  # guarded by the ledger's lock
        self._foreign_scanned_at = -1e9
        self._foreign_backoff = 1
        self._scan_lock = threading.Lock()
        self._objects: dict[str, _Object] = {}
        self._mem: LRUCache = LRUCache(MEMORY_FALLBACK_BLOCKS * block_size_bytes, getsizeof=len)
        self._touched: dict[BlockKey, float] = {}
        self._flights: SingleFlight[bytes | None] = SingleFlight()
        self._futures: set[Future] = set()
        self._closed = False
        self._hits = self._misses = self._bytes_fetched = self._evictions = 0
        self._disk_trouble_at = -1e9
        self._disk_log = _RateLimitedLog(DISK_WARNING_INTERVAL_SECONDS)
        self._readahead_pool = ThreadPoolExecutor(max_workers, thread_name_prefix="wfs-readahead")
        self._prefetch_pool = ThreadPoolExecutor(max_workers, thread_name_prefix="wfs-prefetch")
        self._verify_pool = ThreadPoolExecutor(1, thread_name_prefix="wfs-verify")
        self._prepare_root()
        self._rebuild()

    # ------------------------------------------------------------ startup
    def _prepare_root(self) -> None:
        try:
            if not self.root.exists():
                layout.make_dirs(self.root)
                os.chmod(self.root, 0o700)
            layout.make_dirs(self.root / "objects")
            layout.make_dirs(self.root / "locks")
            doc = f'{{"max_bytes": {self.max_bytes}, "block_size_bytes": {self.block_size_bytes}}}'
            layout.write_file_atomic(self.root, "limits.json", doc.encode())
        except OSError as exc:
            self._disk_failed(exc, "preparing the cache directory")

    def _rebuild(self) -> None:
        """Index the blocks already on disk, oldest first, so the newest survive a smaller cap.

        Joins the directory's users; alone on it, sets the ledger to what is on disk.
        """
        started = time.monotonic()
        with FileLock(self.root / "maint.lock"):
            alone = self._users.join()
            try:
                to_verify = self._index_disk(alone)
            finally:
                self._users.share()
        for obj in to_verify:
            self._submit(self._verify_pool, self._verify_job, obj)
        with self._lock:
            used, nblocks = self._lru.currsize, len(self._lru)
        logger.info(
            "cache %s: indexed %d blocks of %d objects, %.1f MiB of %.1f MiB%s, in %.3f s",
            self.root, nblocks, len(self._objects), used / MIB, self.max_bytes / MIB,
            " (alone: ledger recounted)" if alone else "", time.monotonic() - started,
        )

    def _index_disk(self, alone: bool) -> list[_Object]:
        try:
            scanned = list(layout.scan(self.root, repair=True))
        except OSError as exc:
            self._disk_failed(exc, "scanning the cache directory")
            scanned = []
        on_disk = 0
        entries: list[tuple[int, str, int, int]] = []
        for found in scanned:
            meta = found.meta
            obj = _Object(found.obj_hash, meta.key, meta.size_bytes, meta.block_size_bytes, found.directory)
            obj.md5, obj.verified, obj.meta_written = meta.md5_b64, meta.verified, True
            self._objects[found.obj_hash] = obj
            entries.extend((mtime_ns, found.obj_hash, index, length) for index, length, mtime_ns in found.blocks)
        entries.sort()
        to_verify = []
        with self._lock:
            for _mtime, obj_hash, index, length in entries:
                obj = self._objects[obj_hash]
                charge = layout.charge_bytes(length)
                on_disk += charge
                if not self._trim_locked(charge):
                    if layout.unlink_quiet(obj.block_path(index)):
                        self._freed += charge
                    continue
                self._lru[(obj_hash, index)] = charge
                obj.present.add(index)
                obj.nindexed += 1
            for obj in list(self._objects.values()):
                if obj.nindexed == 0:
                    layout.remove_object_dir(obj.directory)
                    del self._objects[obj.hash]
                elif obj.md5 and not obj.verified and len(obj.present) == obj.nblocks and obj.nblocks > 1:
                    obj.verifying = True
                    to_verify.append(obj)
            freed = self._take_freed_locked()
        remaining = on_disk - freed
        with self._ledger.transaction(recount=lambda: remaining) as txn:
            if alone:
                txn.total = remaining  # nothing else is writing: what is on disk is the truth
            elif not txn.recounted:
                txn.total -= freed
        return to_verify

    # ------------------------------------------------------------ public API
    def open(self, key: str, size_bytes: int, fetch: Fetch, *, md5_b64: str | None = None) -> CachedFile:
        """A handle reading ``key`` (``size_bytes`` long) through the cache, fetching with ``fetch``."""
        return CachedFile(self, self._acquire(key, size_bytes, fetch, md5_b64), fetch)

    def state(self, key: str, size_bytes: int) -> str:
        """``"none"``, ``"partial"`` or ``"full"``: how much of the object this process knows is on disk."""
        if size_bytes == 0:
            return "full"
        obj_hash = layout.key_hash(key)
        with self._lock:
            obj = self._objects.get(obj_hash)
            if obj is None or obj.size != size_bytes or not obj.present:
                return "none"
            return "full" if len(obj.present) == obj.nblocks else "partial"

    def prefetch(
        self, key: str, size_bytes: int, fetch: Fetch, *, md5_b64: str | None = None, wait: bool = False
    ) -> None:
        """Fetch every missing block in the background; with ``wait``, block until done and verified.

        With ``wait``, a fetch error is raised, and an md5 mismatch (after one
        full refetch) raises ``CacheIntegrityError``.
        """
        handle = self.open(key, size_bytes, fetch, md5_b64=md5_b64)
        if not wait:
            futures = self._prefetch_missing(handle._obj, fetch)
            if not futures:
                handle.close()
                return
            remaining = [len(futures)]
            lock = threading.Lock()

            def done(_future: Future) -> None:
                with lock:
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    handle.close()

            for future in futures:
                future.add_done_callback(done)
            return
        try:
            self._prefetch_and_verify(handle._obj, fetch)
        finally:
            handle.close()

    def stats(self) -> CacheStats:
        with self._lock:
            blocks = len(self._lru) + sum(1 for p in self._pins.values() if p.written and p.charge)
            objects = sum(1 for obj in self._objects.values() if obj.nindexed)
            looked = self._hits + self._misses
            return CacheStats(
                used_bytes=self._lru.currsize + self._pinned_bytes,
                max_bytes=self.max_bytes,
                objects=objects,
                blocks=blocks,
                hits=self._hits,
                misses=self._misses,
                bytes_fetched=self._bytes_fetched,
                evictions=self._evictions,
                hit_rate=self._hits / looked if looked else 0.0,
            )

    def prune(self, max_bytes: int) -> None:
        """Evict least recently used blocks until this process indexes at most ``max_bytes`` (the cap stays)."""
        with self._lock:
            while self._lru and self._lru.currsize + self._pinned_bytes > max_bytes:
                self._evict_locked(self._lru.oldest())
        self._flush_freed()

    def clear(self) -> None:
        """Evict every block this process indexes, except those a read is using right now."""
        self.prune(0)
        with self._lock:
            self._mem.clear()

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Cancel queued read-ahead and prefetch, and wait at most ``timeout_seconds`` for running work."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._futures)
        for pool in (self._readahead_pool, self._prefetch_pool, self._verify_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        not_done: set[Future] = set()
        if pending:
            _done, not_done = concurrent.futures.wait(pending, timeout=timeout_seconds)
            if not_done:
                logger.warning("cache closed with %d fetches still running", len(not_done))
        self._flush_freed()
        if not not_done:  # else stay a user: those fetches may still write (released at exit)
            self._users.leave()
            self._ledger.close()

    def __enter__(self) -> BlockCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ objects
    def _acquire(self, key: str, size_bytes: int, fetch: Fetch, md5: str | None) -> _Object:
        if size_bytes < 0:
            raise ValueError(f"negative size for {key!r}")
        obj_hash = layout.key_hash(key)
        verify = False
        with self._lock:
            obj = self._objects.get(obj_hash)
            if obj is None:
                obj = _Object(obj_hash, key, size_bytes, self.block_size_bytes,
                              layout.object_dir(self.root, obj_hash))
                obj.md5 = md5
                self._objects[obj_hash] = obj
            elif obj.size != size_bytes or (md5 and obj.md5 and md5 != obj.md5):
                logger.info("cache object %s changed (size %d -> %d); discarding its blocks",
                            obj.describe(), obj.size, size_bytes)
                self._discard_blocks_locked(obj)
                obj.reset(size_bytes, self.block_size_bytes if obj.nindexed == 0 else obj.block_size)
                obj.md5, obj.failed, obj.md5_failures, obj.meta_dirty = md5, False, 0, True
            elif md5 and not obj.md5:
                obj.md5, obj.meta_dirty = md5, True
                if len(obj.present) == obj.nblocks > 1 and not obj.verifying:
                    obj.verifying = verify = True
            obj.fetch = fetch
            obj.open_count += 1
        self._flush_freed()
        if verify:
            self._submit(self._verify_pool, self._verify_job, obj)
        return obj

    def _release(self, obj: _Object) -> None:
        with self._lock:
            obj.open_count -= 1
            self._maybe_forget_locked(obj)

    def _maybe_forget_locked(self, obj: _Object) -> None:
        if obj.nindexed == 0 and obj.open_count == 0 and not obj.verifying and not obj.failed:
            if self._objects.get(obj.hash) is obj:
                del self._objects[obj.hash]

    # ------------------------------------------------------------ index (all *_locked: hold _lock)
    def _trim_locked(self, charge: int) -> bool:
        """Startup: make room for ``charge`` in this process's index (which then holds every block on disk)."""
        if charge > self.max_bytes:
            return False
        while self._lru.currsize + self._pinned_bytes + charge > self.max_bytes:
            if not self._lru:
                return False
            self._evict_locked(self._lru.oldest())
        return True

    def _take_freed_locked(self) -> int:
        freed, self._freed = self._freed, 0
        return freed

    def _pin_locked(self, key: BlockKey) -> _Pin:
        pin = self._pins.get(key)
        if pin is None:
            charge = self._lru.pop(key, None)
            pin = self._pins[key] = _Pin(charge or 0, charge is not None)
            self._pinned_bytes += pin.charge
        pin.count += 1
        return pin

    def _unpin_locked(self, key: BlockKey) -> None:
        pin = self._pins[key]
        pin.count -= 1
        if pin.count:
            return
        del self._pins[key]
        if pin.charge:
            self._pinned_bytes -= pin.charge
            if pin.written:
                self._lru[key] = pin.charge  # most recently used
            else:  # cannot happen: a writer holds its own pin until it commits or gives up
                logger.error("cache block %s unpinned while being written", key)

    def _evict_locked(self, key: BlockKey) -> None:
        """Delete an unpinned block of the LRU; its charge goes to ``_freed`` only if this unlink removed it."""
        charge = self._lru.pop(key)
        obj = self._objects[key[0]]
        if layout.unlink_quiet(obj.block_path(key[1])):
            self._freed += charge
        self._evictions += 1
        self._unindexed_locked(obj, key[1])

    def _unindexed_locked(self, obj: _Object, index: int) -> None:
        obj.present.discard(index)
        obj.nindexed -= 1
        self._touched.pop((obj.hash, index), None)
        if obj.nindexed == 0:
            layout.remove_object_dir(obj.directory)
            obj.meta_written = False
            self._maybe_forget_locked(obj)

    def _drop_locked(self, obj: _Object, index: int, *, unlink: bool) -> None:
        """Remove a present block from the index (file already gone, or bad bytes when ``unlink``)."""
        key = (obj.hash, index)
        charge = self._lru.pop(key)
        if charge is None:
            pin = self._pins.get(key)
            if pin is None or not pin.written or not pin.charge:
                return
            charge = pin.charge
            self._pinned_bytes -= pin.charge
            pin.charge, pin.written = 0, False
        if unlink and layout.unlink_quiet(obj.block_path(index)):
            self._freed += charge
        self._unindexed_locked(obj, index)

    def _discard_blocks_locked(self, obj: _Object) -> None:
        for index in sorted(obj.present):
            self._drop_locked(obj, index, unlink=True)
        for key in [k for k in self._mem if k[0] == obj.hash]:
            del self._mem[key]
        obj.verified = False

    # ------------------------------------------------------------ reading
    def _read_range(self, obj: _Object, index: int, lo: int, hi: int, fetch: Fetch) -> bytes:
        """Bytes ``[lo, hi)`` of block ``index``; the caller has pinned the block."""
        key = (obj.hash, index)
        with self._lock:
            present = self._pins[key].written
            if present:
                self._hits += 1
                now = time.monotonic()
                touch = now - self._touched.get(key, -1e9) > TOUCH_INTERVAL_SECONDS
                if touch:
                    self._touched[key] = now
                check_small = obj.nblocks == 1 and obj.md5 is not None and not obj.verified
            else:
                self._misses += 1
                data = self._mem.get(key)
                if data is not None:
                    return data[lo:hi]
        if present:
            if check_small and not self._verify_object(obj):
                if obj.failed:
                    raise CacheIntegrityError(f"md5 mismatch for {obj.describe()}")
            else:
                got = self._pread(obj, index, lo, hi)
                if got is not None:
                    if touch:
                        _touch(obj.block_path(index))
                    return got
        for _attempt in range(3):
            data = self._load_block(obj, index, fetch)
            if data is not None:
                return data[lo:hi]
            got = self._pread(obj, index, lo, hi)  # another thread or process stored it
            if got is not None:
                return got
        # The block keeps vanishing (another process evicting under a tiny cap): serve it uncached.
        return self._fetch_checked(obj, index, fetch)[lo:hi]

    def _pread(self, obj: _Object, index: int, lo: int, hi: int) -> bytes | None:
        """Read from the block file; ``None`` (and the block forgotten) if it is gone or unreadable."""
        path = obj.block_path(index)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, hi - lo, lo)
            finally:
                os.close(fd)
        except FileNotFoundError:
            data = None
        except OSError as exc:
            self._disk_log.warning("read", "cache: cannot read %s (%s); fetching it again", path, exc)
            data = None
        if data is not None and len(data) == hi - lo:
            return data
        with self._lock:
            self._drop_locked(obj, index, unlink=data is not None)
        self._flush_freed()
        return None

    def _load_block(self, obj: _Object, index: int, fetch: Fetch) -> bytes | None:
        """Make block ``index`` present: the fetched bytes, or ``None`` if it was found on disk."""
        return self._flights.do((obj.hash, index), lambda: self._fetch_and_store(obj, index, fetch))

    def _fetch_and_store(self, obj: _Object, index: int, fetch: Fetch) -> bytes | None:
        with FileLock(layout.lock_path(self.root, obj.hash, index)):
            key = (obj.hash, index)
            with self._lock:
                pin = self._pins.get(key)
                if (pin is not None and pin.written) or key in self._lru:
                    return None
                data = self._mem.get(key)
            if data is not None:
                return data
            if self._adopt(obj, index):
                return None
            # Room is reserved before fetching, so fetched bytes never wait for the shared ledger.
            charge = layout.charge_bytes(obj.block_length(index))
            outcome = self._reserve(obj, key, charge)
            try:
                data = self._fetch_checked(obj, index, fetch)
            except BaseException:
                if outcome == "ok":
                    self._unreserve(obj, index)
                raise
            if outcome == "ok" and layout.charge_bytes(len(data)) != charge:  # the object changed meanwhile
                self._unreserve(obj, index)
                outcome = "changed"
            if outcome == "ok":
                self._store(obj, index, data)
            elif outcome != "exists":
                logger.debug("cache: no room for block %d of %s (%s)", index, obj.describe(), outcome)
                self._remember(key, data)
            return data

    def _adopt(self, obj: _Object, index: int) -> bool:
        """Index a whole block another process wrote; ``True`` if the file is there."""
        length = obj.block_length(index)
        try:
            if os.stat(obj.block_path(index)).st_size != length:
                return False
        except OSError:
            return False
        key = (obj.hash, index)
        charge = layout.charge_bytes(length)
        verify = False
        with self._lock:
            pin = self._pins.get(key)
            if not ((pin is not None and pin.charge) or key in self._lru):
                # Indexed without touching the ledger: the process that wrote it counted it.
                pin = self._pin_locked(key)
                pin.charge, pin.written = charge, False
                self._pinned_bytes += charge
                obj.nindexed += 1
                obj.meta_written = True  # the other process wrote it before the block
                verify = self._commit_locked(obj, key)
        if verify:
            self._submit(self._verify_pool, self._verify_job, obj)
        return True

    def _fetch_checked(self, obj: _Object, index: int, fetch: Fetch) -> bytes:
        """Fetch one block, checking its length (and the md5 of a one-block object, refetching once)."""
        start = index * obj.block_size
        length = obj.block_length(index)
        check_md5 = obj.nblocks == 1 and obj.md5 is not None
        for attempt in (1, 2):
            data = fetch(start, start + length)
            if not isinstance(data, bytes):
                data = bytes(data)
            with self._lock:
                self._bytes_fetched += len(data)
            if len(data) != length:
                raise CacheIntegrityError(
                    f"fetch of bytes {start}-{start + length} of {obj.describe()} returned {len(data)} bytes,"
                    f" expected {length}"
                )
            if not check_md5:
                return data
            if md5_b64(data) == obj.md5:
                with self._lock:
                    if not obj.verified:
                        obj.verified, obj.meta_dirty = True, True
                return data
            logger.warning("md5 mismatch for %s (attempt %d of 2)", obj.describe(), attempt)
        with self._lock:
            obj.failed = True
            self._discard_blocks_locked(obj)
        self._flush_freed()
        logger.error("md5 of %s does not match %s after a refetch; reads will fail", obj.describe(), obj.md5)
        raise CacheIntegrityError(f"md5 mismatch for {obj.describe()} after a refetch")

    # ------------------------------------------------------------ room (the shared ledger)
    def _reserve(self, obj: _Object, key: BlockKey, charge: int) -> str:
        """Charge a block about to be written, making room: ``"ok"``, ``"exists"``, ``"nospace"`` or ``"closed"``.

        Under the ledger's lock: evict until the directory's total plus
        ``charge`` fits the cap, add ``charge``, pin the block as being written.
        """
        if charge > self.max_bytes:
            return "nospace"
        for attempt in (0, 1):
            with self._ledger.transaction() as txn:
                with self._lock:
                    if self._closed:
                        return "closed"
                    txn.total -= self._take_freed_locked()
                    if self._indexed_locked(key):
                        return "exists"
                room = self._make_room(txn, charge, may_scan=attempt == 0)
                if room == "ok":
                    with self._lock:
                        if self._indexed_locked(key):  # cannot happen: one writer per block (flight + flock)
                            return "exists"
                        pin = self._pin_locked(key)
                        pin.charge, pin.written = charge, False
                        self._pinned_bytes += charge
                        obj.nindexed += 1
                        txn.total += charge
                    return "ok"
                if room == "nospace":
                    return "nospace"
            self._scan_foreign()  # room == "scan": without the ledger's lock, then try again
        return "nospace"

    def _indexed_locked(self, key: BlockKey) -> bool:
        pin = self._pins.get(key)
        return (pin is not None and pin.charge > 0) or key in self._lru

    def _make_room(self, txn: Transaction, charge: int, *, may_scan: bool) -> str:
        """Evict until ``txn.total + charge`` fits: ``"ok"``, ``"nospace"``, or ``"scan"`` (candidates needed).

        The ledger's lock is held; ``BlockCache._lock`` is not.
        """
        while txn.total + charge > self.max_bytes:
            with self._lock:
                own = self._lru.oldest()
                own_path = self._objects[own[0]].block_path(own[1]) if own is not None else ""
                others = txn.total - self._lru.currsize - self._pinned_bytes
            foreign = self._foreign
            candidate = foreign[0] if foreign else None
            if candidate is None and others > 0 and may_scan and self._foreign_scan_due(urgent=own is None):
                return "scan"
            if own is not None and candidate is not None:
                own_mtime = _mtime_ns(own_path)
                if own_mtime is not None and candidate.mtime_ns < own_mtime:
                    own = None  # the other process's block is older
                else:
                    candidate = None  # ours is older, or already gone (then evicting it just forgets it)
            if own is not None:
                with self._lock:
                    if own in self._lru:  # else pinned meanwhile: look again
                        self._evict_locked(own)
                    txn.total -= self._take_freed_locked()
            elif candidate is not None:
                foreign.popleft()
                txn.total -= self._evict_foreign(candidate)
            else:
                return "nospace"
        return "ok"

    def _evict_foreign(self, candidate: _Foreign) -> int:
        """Delete a block only other processes know, if it is unchanged since the scan; its charge if removed."""
        with self._lock:
            if self._indexed_locked(candidate.key) or candidate.key in self._pins:
                return 0  # ours now
        lock_file = layout.lock_path(self.root, *candidate.key)
        try:
            lock_fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return 0
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # some process is fetching or adopting a block of this stripe: leave it
            if _mtime_ns(candidate.path) != candidate.mtime_ns:
                return 0  # gone, or used since the scan: no longer the oldest
            with self._lock:
                if candidate.key in self._pins or candidate.key in self._lru:
                    return 0
                if not layout.unlink_quiet(candidate.path):
                    return 0
                self._evictions += 1
            layout.remove_object_dir(candidate.directory)
            return candidate.charge
        finally:
            os.close(lock_fd)

    def _foreign_scan_due(self, *, urgent: bool) -> bool:
        interval = FOREIGN_RESCAN_URGENT_SECONDS if urgent else FOREIGN_RESCAN_SECONDS
        return time.monotonic() - self._foreign_scanned_at >= interval * self._foreign_backoff

    def _scan_foreign(self) -> None:
        """Remember the oldest blocks on disk this process does not index (no lock held but ``_scan_lock``)."""
        with self._scan_lock:
            if time.monotonic() - self._foreign_scanned_at < FOREIGN_RESCAN_URGENT_SECONDS:
                return  # another thread just did
            started = time.monotonic()
            pins, lru = self._pins, self._lru  # membership tests only: a hint, re-checked before deleting

            def found():
                for obj in layout.scan(self.root, repair=False):
                    for index, length, mtime_ns in obj.blocks:
                        key = (obj.obj_hash, index)
                        if key not in lru and key not in pins:
                            yield mtime_ns, key, layout.charge_bytes(length), obj.directory

            try:
                oldest = heapq.nsmallest(FOREIGN_CANDIDATES, found(), key=lambda entry: entry[0])
            except OSError as exc:
                logger.debug("cache: scan for other processes' blocks failed: %s", exc)
                oldest = []
            self._foreign = deque(_Foreign(*entry) for entry in oldest)
            self._foreign_backoff = 1 if oldest else min(2 * self._foreign_backoff, FOREIGN_RESCAN_BACKOFF)
            self._foreign_scanned_at = time.monotonic()
            logger.debug("cache: %d blocks of other processes found in %.3f s", len(oldest),
                         self._foreign_scanned_at - started)

    def _recount(self) -> int:
        """The ledger's total when it is missing or unreadable: blocks on disk plus ours being written."""
        try:
            total = layout.disk_usage(self.root)
        except OSError as exc:
            logger.debug("cache: cannot scan %s: %s", self.root, exc)
            with self._lock:
                return self._lru.currsize + self._pinned_bytes
        with self._lock:
            return total + sum(pin.charge for pin in self._pins.values() if pin.charge and not pin.written)

    def _flush_freed(self) -> None:
        """Subtract from the ledger what this process removed (call with no lock held but block flocks)."""
        if not self._freed:
            return
        with self._ledger.transaction() as txn, self._lock:
            txn.total -= self._take_freed_locked()

    # ------------------------------------------------------------ writing

    def _commit_locked(self, obj: _Object, key: BlockKey) -> bool:
        """The block's file is in place; returns whether the object now needs a background md5 check."""
        self._pins[key].written = True
        obj.present.add(key[1])
        self._unpin_locked(key)
        if obj.md5 and not obj.verified and not obj.verifying and obj.nblocks > 1 and len(obj.present) == obj.nblocks:
            obj.verifying = True
            return True
        return False

    def _unreserve(self, obj: _Object, index: int) -> None:
        """Give back the room reserved for a block that will not be written."""
        key = (obj.hash, index)
        with self._lock:
            pin = self._pins[key]
            self._pinned_bytes -= pin.charge
            self._freed += pin.charge
            pin.charge = 0
            self._unindexed_locked(obj, index)
            self._unpin_locked(key)
        self._flush_freed()

    def _store(self, obj: _Object, index: int, data: bytes) -> None:
        """Write a block whose room ``_reserve`` reserved, and index it."""
        key = (obj.hash, index)
        with self._lock:
            if obj.verified and obj.nblocks > 1:  # new bytes the last check did not cover
                obj.verified, obj.meta_dirty = False, True
            meta = obj.meta()
            meta_needed = obj.meta_dirty or not obj.meta_written
        meta_path = obj.dir_prefix + layout.META_NAME
        if not meta_needed and not os.path.exists(meta_path):
            meta_needed = True  # removed by another process (prune, clear, eviction) since we wrote it
        try:
            if meta_needed:
                layout.write_meta(obj.directory, meta)
            layout.write_file_atomic(obj.directory, layout.block_name(index), data)
        except OSError as exc:
            self._unreserve(obj, index)
            self._disk_failed(exc, f"storing block {index} of {obj.describe()}")
            self._remember(key, data)
            return
        if not os.path.exists(meta_path):  # another process emptied the object while we wrote
            try:
                layout.write_meta(obj.directory, meta)
            except OSError as exc:
                self._disk_failed(exc, f"storing the metadata of {obj.describe()}")
        with self._lock:
            if meta_needed:
                obj.meta_written = True
                if meta == obj.meta():
                    obj.meta_dirty = False
            verify = self._commit_locked(obj, key)
        if verify:
            self._submit(self._verify_pool, self._verify_job, obj)

    def _remember(self, key: BlockKey, data: bytes) -> None:
        with self._lock:
            self._mem[key] = data

    def _disk_failed(self, exc: OSError, doing: str) -> None:
        self._disk_trouble_at = time.monotonic()
        name = errno.errorcode.get(exc.errno or 0, "error")
        self._disk_log.warning(
            name, "cache dir %s refused a write while %s: %s; serving fetched bytes without caching them",
            self.root, doing, exc,
        )

    def _disk_troubled(self) -> bool:
        return time.monotonic() - self._disk_trouble_at < DISK_TROUBLE_SECONDS

    # ------------------------------------------------------------ verification
    def _verify_job(self, obj: _Object) -> None:
        try:
            self._verify_object(obj)
        except Exception:
            logger.exception("md5 check of %s failed", obj.describe())
        finally:
            with self._lock:
                obj.verifying = False
                self._maybe_forget_locked(obj)

    def _verify_object(self, obj: _Object) -> bool | None:
        """md5 of the complete object on disk: True (recorded), False (blocks discarded), None (incomplete)."""
        with obj.verify_lock:
            if obj.verified:
                return True
            digest = hashlib.md5()
            for index in range(obj.nblocks):
                if self._closed:
                    return None
                try:
                    fd = os.open(obj.block_path(index), os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                try:
                    length, pos = obj.block_length(index), 0
                    while pos < length:
                        chunk = os.pread(fd, min(_VERIFY_CHUNK_BYTES, length - pos), pos)
                        if not chunk:
                            return None
                        digest.update(chunk)
                        pos += len(chunk)
                finally:
                    os.close(fd)
            ok = base64.b64encode(digest.digest()).decode("ascii") == obj.md5
            with self._lock:
                if ok:
                    obj.verified, obj.meta_dirty = True, True
                    meta = obj.meta()
                else:
                    obj.md5_failures += 1
                    obj.failed = obj.md5_failures >= 2
                    self._discard_blocks_locked(obj)
            if not ok:
                self._flush_freed()
                if obj.failed:
                    logger.error("md5 of %s does not match %s after a refetch; reads will fail",
                                 obj.describe(), obj.md5)
                else:
                    logger.warning("md5 of %s does not match %s; discarded its blocks to fetch them again",
                                   obj.describe(), obj.md5)
                return False
            try:
                layout.write_meta(obj.directory, meta)
            except OSError as exc:
                self._disk_failed(exc, f"recording the md5 check of {obj.describe()}")
                return True
            with self._lock:
                obj.meta_written = True
                if meta == obj.meta():
                    obj.meta_dirty = False
            return True

    # ------------------------------------------------------------ background work
    def _submit(self, pool: ThreadPoolExecutor, fn: Callable, *args: object) -> Future | None:
        with self._lock:
            if self._closed:
                return None
            try:
                future = pool.submit(fn, *args)
            except RuntimeError:  # pool shut down
                return None
            self._futures.add(future)
        future.add_done_callback(self._forget_future)
        return future

    def _forget_future(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def _start_missing(self, obj: _Object, indexes: Iterable[int], fetch: Fetch) -> dict[int, Future]:
        """Start read-ahead fetches for the blocks that are neither present nor in flight."""
        started: dict[int, Future] = {}
        if obj.failed:
            return started
        for index in indexes:
            key = (obj.hash, index)
            with self._lock:
                pin = self._pins.get(key)
                if key in self._lru or (pin is not None and pin.written) or key in self._mem:
                    continue
            if self._flights.in_flight(key):
                continue
            future = self._submit(self._readahead_pool, self._background_block, obj, index, fetch)
            if future is not None:
                started[index] = future
        return started

    def _background_block(self, obj: _Object, index: int, fetch: Fetch) -> None:
        if self._closed or obj.failed:
            return
        try:
            self._load_block(obj, index, fetch)
        except Exception as exc:  # the reader will try again and see the error itself
            logger.debug("read-ahead of block %d of %s failed: %s", index, obj.describe(), exc)

    def _prefetch_missing(self, obj: _Object, fetch: Fetch) -> list[Future]:
        with self._lock:
            missing = [i for i in range(obj.nblocks) if i not in obj.present]
        futures = []
        for index in missing:
            future = self._submit(self._prefetch_pool, self._load_block, obj, index, fetch)
            if future is not None:
                futures.append(future)
        return futures

    def _prefetch_and_verify(self, obj: _Object, fetch: Fetch) -> None:
        """Fetch all missing blocks and wait; then check the md5, refetching once after a mismatch.

        Terminates: each pass returns, raises, counts an md5 mismatch (two make
        the object failed) or counts a pass where blocks were evicted meanwhile.
        """
        evicted_passes = 0
        while True:
            if obj.failed:
                raise CacheIntegrityError(f"md5 mismatch for {obj.describe()} after a refetch")
            for future in self._prefetch_missing(obj, fetch):
                future.result()
            if not obj.md5:
                return
            failures = obj.md5_failures
            ok = self._verify_object(obj)
            if ok:
                return
            if obj.failed:
                raise CacheIntegrityError(f"md5 mismatch for {obj.describe()} after a refetch")
            if ok is None and obj.md5_failures == failures:
                evicted_passes += 1
                if evicted_passes >= 2:
                    logger.info("could not check the md5 of %s: it does not stay whole in the cache",
                                obj.describe())
                    return

    def _readahead_blocks(self, obj: _Object) -> int:
        by_cap = self.max_bytes // layout.charge_bytes(obj.block_size) // 2
        return max(0, min(self.readahead_max_bytes // obj.block_size, by_cap))


class CachedFile:
    """One open object: thread-safe ``read``; many handles may share one object."""

    def __init__(self, cache: BlockCache, obj: _Object, fetch: Fetch) -> None:
        self._cache = cache
        self._obj = obj
        self._fetch = fetch
        self._lock = threading.Lock()
        self._closed = False
        self._readahead = ReadAhead(obj.block_size, obj.nblocks, cache._readahead_blocks(obj))
        self._pending: dict[int, Future] = {}

    @property
    def key(self) -> str:
        return self._obj.key

    @property
    def size_bytes(self) -> int:
        return self._obj.size

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at EOF, ``b""`` past it)."""
        if self._closed:
            raise ValueError("read of a closed CachedFile")
        if offset < 0 or size < 0:
            raise ValueError(f"bad read: offset {offset}, size {size}")
        obj, cache = self._obj, self._cache
        end = min(obj.size, offset + size)
        if offset >= end:
            return b""
        if obj.failed:
            raise CacheIntegrityError(f"md5 mismatch for {obj.describe()}")
        block_size = obj.block_size
        first, last = offset // block_size, (end - 1) // block_size
        self._plan_readahead(offset, end)
        keys = [(obj.hash, index) for index in range(first, last + 1)]
        with cache._lock:
            for key in keys:
                cache._pin_locked(key)
        helpers: dict[int, Future] = {}
        try:
            if last > first:  # fetch the other missing blocks of this read in parallel
                helpers = cache._start_missing(obj, range(first + 1, last + 1), self._fetch)
            parts = []
            for index in range(first, last + 1):
                base = index * block_size
                parts.append(cache._read_range(obj, index, max(offset, base) - base,
                                               min(end, base + block_size) - base, self._fetch))
        finally:
            for future in helpers.values():
                future.cancel()
            with cache._lock:
                for key in keys:
                    cache._unpin_locked(key)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _plan_readahead(self, offset: int, end: int) -> None:
        cache = self._cache
        with self._lock:
            ra = self._readahead
            limit = 1 if cache._disk_troubled() else cache._readahead_blocks(self._obj)
            ra.max_blocks = limit
            indexes, seek = ra.on_read(offset, end)
            if seek or self._pending:
                for index, future in list(self._pending.items()):
                    if seek:
                        future.cancel()
                    if future.done():
                        del self._pending[index]
            if indexes:
                self._pending.update(cache._start_missing(self._obj, indexes, self._fetch))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.cancel()
        self._cache._release(self._obj)

    def __enter__(self) -> CachedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _mtime_ns(path: str) -> int | None:
    try:
        return os.lstat(path).st_mtime_ns
    except OSError:
        return None


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass
