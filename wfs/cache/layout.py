"""On-disk layout of the block cache: names, atomic writes, ``meta.json``, the startup scan.

::

    root/
      limits.json                      {"max_bytes": ...} of the last mount (for `wfs cache stats`)
      maint.lock                       flock: startup scan, prune and clear exclude each other
      usage                            the ledger: accounted bytes of the whole directory (see ``ledger``)
      users                            flock: shared by every process using the directory
      locks/<nnn>.lock                 4096 striped flock files, one held per block fetch
      objects/<hh>/<sha256(key)>/
        meta.json                      key, size_bytes, block_size_bytes, md5_b64, verified
        <index>.blk                    one block, exactly its expected length
        .tmp.<pid>.<rand>.<name>       a write in progress (never read)

What stays true:

- A ``<index>.blk`` file is always whole: data is written to a temp name in the
  same directory and moved into place with ``os.replace``. A crash leaves a
  temp file (removed by the next scan) or a whole block, never a short one;
  the scan still deletes any block whose length is not the expected one.
- Names on disk come from ``sha256(key)`` and integers only; nothing a server
  sends becomes a path component.
- Files are created 0600 and directories 0700.

This module does no locking of its own and keeps no state.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

META_NAME = "meta.json"
BLOCK_SUFFIX = ".blk"
TEMP_PREFIX = ".tmp."
META_VERSION = 1
LOCK_STRIPES = 4096
# A temp file older than this is removed at startup even if its writer seems alive.
STALE_TEMP_SECONDS = 3600.0
# Disk allocation unit, and the per-block share charged for an object's
# directory entry and meta.json, so the accounted size is >= what `du` counts.
ALLOC_UNIT_BYTES = 4096
BLOCK_OVERHEAD_BYTES = 2 * ALLOC_UNIT_BYTES


def key_hash(key: str) -> str:
    """The sha256 hex digest naming an object's directory."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def object_dir(root: Path, obj_hash: str) -> Path:
    return root / "objects" / obj_hash[:2] / obj_hash


def block_name(index: int) -> str:
    return f"{index}{BLOCK_SUFFIX}"


def block_count(size_bytes: int, block_size_bytes: int) -> int:
    return -(-size_bytes // block_size_bytes)


def block_length(size_bytes: int, block_size_bytes: int, index: int) -> int:
    """Expected length of block ``index``: ``block_size_bytes`` except for a shorter last one."""
    return max(0, min(block_size_bytes, size_bytes - index * block_size_bytes))


def charge_bytes(length: int) -> int:
    """Bytes a block of ``length`` is charged against the cap (its allocation plus overhead)."""
    return -(-length // ALLOC_UNIT_BYTES) * ALLOC_UNIT_BYTES + BLOCK_OVERHEAD_BYTES


def lock_path(root: Path, obj_hash: str, index: int) -> Path:
    """The striped lock file for one block; consecutive blocks of an object use different stripes."""
    stripe = (int(obj_hash[:8], 16) + index) % LOCK_STRIPES
    return root / "locks" / f"{stripe:03x}.lock"


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (``os.makedirs`` gives parents 0777&~umask)."""
    missing = []
    current = Path(path)
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass


# ------------------------------------------------------------------ writes
# Largest single os.write. On the bench VM (ext4, kernel 6.18) 1 GiB of 8 MiB files written
# with one 8 MiB (or 2 MiB) write per call went at ~300-600 MiB/s, with 1 MiB writes at ~3 GB/s.
WRITE_CHUNK_BYTES = 1024 * 1024


def _write_fd(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` in pieces of at most ``WRITE_CHUNK_BYTES``.

    The seam tests patch to simulate a full or slow disk.
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view[:WRITE_CHUNK_BYTES])
        view = view[written:]


def write_file_atomic(directory: Path, name: str, data: bytes | memoryview) -> None:
    """Write ``directory/name`` whole or not at all (temp name + ``os.replace``, no fsync).

    Creates ``directory`` if it is missing (another process may have pruned
    it). On any error the temp file is removed and the ``OSError`` re-raised.
    """
    for attempt in (0, 1):
        tmp = directory / f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{name}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            if attempt:
                raise
            make_dirs(directory)
            continue
        try:
            try:
                _write_fd(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, directory / name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return


# -------------------------------------------------------------------- meta
@dataclass
class Meta:
    key: str
    size_bytes: int
    block_size_bytes: int
    md5_b64: str | None = None
    verified: bool = False

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": META_VERSION,
                "key": self.key,
                "size_bytes": self.size_bytes,
                "block_size_bytes": self.block_size_bytes,
                "md5_b64": self.md5_b64,
                "verified": self.verified,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Meta:
        """Parse ``meta.json``; raises ``ValueError`` on anything unexpected."""
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != META_VERSION:
            raise ValueError("unknown meta version")
        key, size, block = doc.get("key"), doc.get("size_bytes"), doc.get("block_size_bytes")
        md5, verified = doc.get("md5_b64"), doc.get("verified", False)
        if not isinstance(key, str) or not isinstance(size, int) or not isinstance(block, int):
            raise ValueError("bad meta fields")
        if size < 0 or block <= 0 or not (md5 is None or isinstance(md5, str)) or not isinstance(verified, bool):
            raise ValueError("bad meta values")
        return cls(key, size, block, md5, verified)


def write_meta(directory: Path, meta: Meta) -> None:
    write_file_atomic(directory, META_NAME, meta.to_json())


def read_meta(directory: Path) -> Meta:
    with open(directory / META_NAME, "rb") as f:
        return Meta.from_json(f.read(65536))


# -------------------------------------------------------------------- scan
@dataclass
class ScannedObject:
    obj_hash: str
    directory: Path
    meta: Meta
    # (index, length, mtime_ns) of every block whose length is right.
    blocks: list[tuple[int, int, int]] = field(default_factory=list)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of ours may be writing it (a reused pid ages out)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_temp(name: str, mtime: float, now: float) -> bool:
    parts = name[len(TEMP_PREFIX):].split(".", 2)
    try:
        pid = int(parts[0])
    except (ValueError, IndexError):
        return True
    return now - mtime > STALE_TEMP_SECONDS or not _pid_alive(pid)


def unlink_quiet(path: str | Path) -> bool:
    """Remove a file; ``True`` if this call removed it (a missing one is fine, other errors are only logged)."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.debug("could not remove %s: %s", path, exc)
        return False


def scan(root: Path, *, repair: bool) -> Iterator[ScannedObject]:
    """Yield every object in the cache with its valid blocks.

    Uses ``os.scandir`` and ``stat`` only (no hashing). With ``repair``,
    deletes what cannot be used: blocks of the wrong length or index, temp
    files of dead writers, object directories without a readable
    ``meta.json`` (or whose name is not the hash of its key), and object
    directories left without blocks.
    """
    objects = root / "objects"
    now = time.time()
    try:
        shards = list(os.scandir(objects))
    except FileNotFoundError:
        return
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(shard.path))
        except OSError as exc:
            logger.warning("cannot scan cache shard %s: %s", shard.path, exc)
            continue
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            found = _scan_object(Path(entry.path), entry.name, now, repair)
            if found is not None:
                yield found


def _scan_object(directory: Path, obj_hash: str, now: float, repair: bool) -> ScannedObject | None:
    try:
        meta = read_meta(directory)
        if key_hash(meta.key) != obj_hash:
            raise ValueError("directory name is not the hash of the key")
    except FileNotFoundError:
        meta = None
    except (OSError, ValueError) as exc:
        logger.warning("discarding cache object %s: unreadable meta.json (%s)", obj_hash[:16], exc)
        meta = None
    if meta is None:
        if repair and not _has_live_temp(directory, now):
            shutil.rmtree(directory, ignore_errors=True)
        return None
    found = ScannedObject(obj_hash, directory, meta)
    nblocks = block_count(meta.size_bytes, meta.block_size_bytes)
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        logger.warning("cannot scan cache object %s: %s", directory, exc)
        return None
    for entry in entries:
        name = entry.name
        if name.startswith(TEMP_PREFIX):
            if repair:
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                if _stale_temp(name, mtime, now):
                    unlink_quiet(entry.path)
            continue
        if not name.endswith(BLOCK_SUFFIX):
            continue
        stem = name[: -len(BLOCK_SUFFIX)]
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        index = int(stem) if stem.isdigit() and str(int(stem)) == stem else -1
        expected = block_length(meta.size_bytes, meta.block_size_bytes, index) if 0 <= index < nblocks else -1
        if expected <= 0 or st.st_size != expected or not entry.is_file(follow_symlinks=False):
            logger.info("discarding cache block %s (length %d, expected %d)", entry.path, st.st_size, expected)
            if repair:
                unlink_quiet(entry.path)
            continue
        found.blocks.append((index, expected, st.st_mtime_ns))
    if not found.blocks:
        if repair:
            remove_object_dir(directory)
        return None
    return found


def _has_live_temp(directory: Path, now: float) -> bool:
    """True if a writer may still be creating this object's first files (its meta.json is a temp)."""
    try:
        for entry in os.scandir(directory):
            if entry.name.startswith(TEMP_PREFIX):
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                if not _stale_temp(entry.name, mtime, now):
                    return True
    except OSError:
        return False
    return False


def disk_usage(root: Path) -> int:
    """Accounted bytes of the valid blocks on disk (``charge_bytes`` of each; stat only, no repair)."""
    return sum(charge_bytes(length) for found in scan(root, repair=False) for _index, length, _mtime in found.blocks)


def remove_object_dir(directory: Path) -> None:
    """Remove ``meta.json`` and the directory if no block, and no write in progress, is left in it (best effort)."""
    try:
        for entry in os.scandir(directory):
            if entry.name.endswith(BLOCK_SUFFIX) or entry.name.startswith(TEMP_PREFIX):
                return
    except FileNotFoundError:
        return
    except OSError:
        return
    unlink_quiet(directory / META_NAME)
    try:
        os.rmdir(directory)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            logger.debug("could not remove %s: %s", directory, exc)
