"""Cache-directory helpers for the CLI (``wfs cache stats|clear|prune``).

They work on a directory whether or not a mount is using it: prune and clear
hold ``maint.lock`` (so they never run against a mount's startup scan or each
other) and delete each block while holding that block's flock, so a block is
never deleted while some process is fetching it. A mount that later finds one
of its blocks gone treats it as a miss. They keep the shared usage ledger
right (see ``ledger``): each block this process removes is subtracted, and
when no mount uses the directory the ledger is set to what is left on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wfs.cache import layout
from wfs.cache.blockstore import CacheStats
from wfs.cache.flight import FileLock
from wfs.cache.ledger import Ledger, UsersLock


def _max_bytes(root: Path) -> int:
    try:
        with open(root / "limits.json", "rb") as f:
            value = json.load(f).get("max_bytes", 0)
        return value if isinstance(value, int) else 0
    except (OSError, ValueError, AttributeError):
        return 0


def cache_stats(root: Path) -> CacheStats:
    """Size of what is on disk (hits and misses are only known to a running mount; 0 here)."""
    root = Path(root)
    used = objects = blocks = 0
    for found in layout.scan(root, repair=False):
        objects += 1
        blocks += len(found.blocks)
        used += sum(layout.charge_bytes(length) for _index, length, _mtime in found.blocks)
    return CacheStats(used_bytes=used, max_bytes=_max_bytes(root), objects=objects, blocks=blocks)


def prune_cache(root: Path, max_bytes: int) -> None:
    """Delete least recently used blocks until the cache holds at most ``max_bytes``."""
    root = Path(root)
    if not (root / "objects").is_dir():
        return
    with FileLock(root / "maint.lock"):
        users = UsersLock(root)
        alone = users.join()  # no mount is using the directory (none can start: we hold maint.lock)
        on_disk: int | None = None
        removed = 0
        try:
            entries = []
            for found in layout.scan(root, repair=True):
                for index, length, mtime_ns in found.blocks:
                    entries.append((mtime_ns, found.obj_hash, index, layout.charge_bytes(length), found.directory))
            total = on_disk = sum(entry[3] for entry in entries)
            entries.sort(key=lambda entry: entry[:3])
            emptied: set[Path] = set()
            for _mtime, obj_hash, index, charge, directory in entries:
                if total <= max_bytes:
                    break
                with FileLock(layout.lock_path(root, obj_hash, index)):
                    try:
                        os.unlink(directory / layout.block_name(index))
                        removed += charge
                    except FileNotFoundError:
                        pass  # a mount evicted it meanwhile, and subtracted it
                total -= charge
                emptied.add(directory)
            for directory in emptied:
                layout.remove_object_dir(directory)
        finally:
            ledger = Ledger(root, lambda: layout.disk_usage(root))
            try:
                with ledger.transaction() as txn:
                    if alone and on_disk is not None:
                        txn.total = on_disk - removed
                    elif not txn.recounted:
                        txn.total -= removed
            finally:
                ledger.close()
                users.leave()


def clear_cache(root: Path) -> None:
    """Delete every cached block (lock files and ``limits.json`` stay)."""
    prune_cache(root, 0)
