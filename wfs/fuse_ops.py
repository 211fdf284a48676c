"""The FUSE adapter: the only module that imports mfusepy.

Each callback resolves the path in the namespace, calls the namespace or the
cache, and converts what they raise with ``errno_map.to_errno``; nothing else
here decides policy. Every write-like call answers ``EROFS`` (the mount is
also made with ``-o ro`` so the kernel refuses most of them first).

Open files: ``open`` needs no download; it pins the file's version (its
content key) for the life of the handle, so a live run's file that changes
upstream is a new object and an open handle never mixes two versions. Files of
finished runs are opened with ``keep_cache`` so the kernel's page cache serves
re-reads without reaching Python.
"""

from __future__ import annotations

import collections
import datetime
import errno
import itertools
import json
import logging
import os
import stat
import threading
import time
from typing import Any

# mfusepy loads libfuse2 first when both are installed; we need libfuse3.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy  # noqa: E402

from wfs import fuse_loop  # noqa: E402
from wfs.cache import BlockCache, CachedFile  # noqa: E402
from wfs.errno_map import to_errno  # noqa: E402
from wfs.failures import failure_log  # noqa: E402
from wfs.kernel_expiry import KernelExpiry  # noqa: E402
from wfs.namespace import DirNode, FileNode, LinkNode, Listing, Namespace, Node  # noqa: E402

logger = logging.getLogger(__name__)

FUSE_FILL_DIR_PLUS = 1 << 1
FUSE_CAP_CACHE_SYMLINKS = 1 << 23  # the kernel keeps readlink answers (libfuse 3.10+)
# With per-path expiry (``KernelExpiry``) the kernel may keep entries and attributes
# this long: immutable ones are never invalidated, the rest are when their TTL ends.
LONG_KERNEL_TIMEOUT_SECONDS = 24 * 3600.0
_STATUS_TTL_SECONDS = 1.0
STATUS_PATH = "/.wfs/status.json"  # hidden: not listed by readdir of /
_STATUS_DIR = "/.wfs"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _iso(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _fail(exc: BaseException, op: str = "", path: str = "") -> mfusepy.FuseOSError:
    code = to_errno(exc)
    if path:
        failure_log.report(op, path, exc, code)  # once per path and cause, with both
    return mfusepy.FuseOSError(code)


class WfsOperations(mfusepy.Operations):
    """Read-only FUSE operations over a ``Namespace`` and a ``BlockCache``."""

    use_ns = True  # times in nanoseconds

    def __init__(
        self, namespace: Namespace, cache: BlockCache, *, on_ready=None, folder_readahead=None, status=None
    ):
        self._status = status or (lambda: {})
        self._namespace = namespace
        self._cache = cache
        self._on_ready = on_ready
        self._folder_readahead = folder_readahead
        self._uid = os.getuid()
        self._gid = os.getgid()
        self._mount_time_ns = time.time_ns()
        self._fh_counter = itertools.count(1)
        self._files: dict[int, CachedFile | bytes] = {}
        self._dirs: dict[int, Listing] = {}
        self._lock = threading.Lock()
        self.timeouts = {"entry": 1.0, "attr": 1.0, "negative": 1.0}
        # What the kernel asked for (the hidden /.wfs files excluded): shows in status.json
        # how much the kernel's own caches spare us.
        self.kernel_requests: collections.Counter[str] = collections.Counter()
        self.expiry: KernelExpiry | None = None  # set by WfsFUSE when libfuse allows it

    # ------------------------------------------------------------ helpers
    def _resolve(self, path: str) -> Node:
        try:
            return self._namespace.resolve(path)
        except Exception as exc:
            raise _fail(exc, "lookup", path) from None

    def attrs(self, node: Node) -> dict[str, Any]:
        """The stat fields of a node (mode 0444 files, 0555 folders, owned by the mounter)."""
        extra: dict[str, Any] = {}
        if isinstance(node, FileNode):
            mode, nlink, size, mtime = stat.S_IFREG | 0o444, 1, node.file.size_bytes, node.file.updated_at
            extra = {"st_blocks": (size + 511) // 512, "st_blksize": 128 * 1024}
        elif isinstance(node, LinkNode):
            size = len(node.target.encode("utf-8", "surrogateescape"))
            mode, nlink, mtime = stat.S_IFLNK | 0o777, 1, node.mtime
        else:
            mode, nlink, size, mtime = stat.S_IFDIR | 0o555, 2, 0, node.mtime
        mtime_ns = int(mtime * 1e9) if mtime else self._mount_time_ns
        return {
            "st_mode": mode,
            "st_nlink": nlink,
            "st_size": size,
            "st_uid": self._uid,
            "st_gid": self._gid,
            "st_mtime": mtime_ns,
            "st_ctime": mtime_ns,
            "st_atime": mtime_ns,
            **extra,
        }

    def _told_kernel(self, path: str, node: Node | None) -> None:
        """The kernel now caches ``path``; have it forget when that may no longer be true."""
        if self.expiry is not None:
            ttl = _STATUS_TTL_SECONDS if node is None else self._namespace.kernel_ttl(node)
            self.expiry.touch(path, ttl)

    # ---------------------------------------------------------- lifecycle
    @mfusepy.overrides(mfusepy.Operations)
    def init_with_config(self, conn_info, config_3) -> None:
        if conn_info is not None and conn_info.capable & FUSE_CAP_CACHE_SYMLINKS:
            # `ls -l` of a project reads every display-name link; their targets change
            # only with the run list, and KernelExpiry drops them with it.
            conn_info.want |= FUSE_CAP_CACHE_SYMLINKS
        if config_3 is not None:
            long = self.expiry is not None
            config_3.entry_timeout = LONG_KERNEL_TIMEOUT_SECONDS if long else self.timeouts["entry"]
            config_3.attr_timeout = LONG_KERNEL_TIMEOUT_SECONDS if long else self.timeouts["attr"]
            config_3.negative_timeout = self.timeouts["negative"]
        logger.info("mounted")
        if self._on_ready is not None:
            self._on_ready()

    @mfusepy.overrides(mfusepy.Operations)
    def destroy(self, path: str) -> None:
        logger.info("unmounting")
        self._cache.close()

    # ---------------------------------------------------------- metadata
    def _status_bytes(self) -> bytes:
        return (json.dumps(self._status(), indent=2, sort_keys=True) + "\n").encode()

    @mfusepy.overrides(mfusepy.Operations)
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        if path == _STATUS_DIR:
            return self.attrs(DirNode("status"))
        if path == STATUS_PATH:
            attrs = self.attrs(DirNode("status"))
            attrs.update(st_mode=stat.S_IFREG | 0o444, st_nlink=1, st_size=len(self._status_bytes()))
            self._told_kernel(path, None)
            return attrs
        self.kernel_requests["getattr"] += 1
        node = self._resolve(path)
        self._told_kernel(path, node)
        return self.attrs(node)

    @mfusepy.overrides(mfusepy.Operations)
    def readlink(self, path: str) -> str:
        self.kernel_requests["readlink"] += 1
        node = self._resolve(path)
        if not isinstance(node, LinkNode):
            raise mfusepy.FuseOSError(errno.EINVAL)
        return node.target

    @mfusepy.overrides(mfusepy.Operations)
    def opendir(self, path: str) -> int:
        try:
            if path == _STATUS_DIR:
                listing = Listing([("status.json", self.getattr(STATUS_PATH))])
            else:
                self.kernel_requests["opendir"] += 1
                listing = self._namespace.listing(path)
        except Exception as exc:
            raise _fail(exc, "listing", path) from None
        fh = next(self._fh_counter)
        with self._lock:
            self._dirs[fh] = listing
        return fh

    @mfusepy.overrides(mfusepy.Operations)
    def readdir_with_offset(self, path: str, offset: int, fh: int):
        listing = self._dirs.get(fh)
        if listing is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        # Offsets are positions in this handle's listing (+2 after . and ..); a
        # project's runs are fetched a page at a time as the kernel reads on.
        for index, dots in enumerate((".", "..")[offset:], start=offset):
            yield dots, {"st_mode": stat.S_IFDIR | 0o555}, index + 1
        index, sent = max(offset, 2), 0
        parent = path.rstrip("/") + "/"
        while True:
            try:
                item = listing.entry(index - 2)
            except Exception as exc:
                if sent:  # hand over what we have; the kernel asks for the rest again
                    return
                raise _fail(exc, "listing", path) from None
            if item is None:
                return
            name, node = item
            if isinstance(node, dict):  # the status folder
                yield name, node, index + 1
            else:
                self._told_kernel(parent + name, node)  # readdirplus: the kernel caches it too
                yield name, self.attrs(node), index + 1
            index, sent = index + 1, sent + 1

    @mfusepy.overrides(mfusepy.Operations)
    def releasedir(self, path: str, fh: int) -> int:
        with self._lock:
            self._dirs.pop(fh, None)
        return 0

    @mfusepy.overrides(mfusepy.Operations)
    def statfs(self, path: str) -> dict[str, int]:
        stats = self._cache.stats()
        block = 4096
        return {
            "f_bsize": block,
            "f_frsize": block,
            "f_blocks": max(stats.max_bytes // block, 1),
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": 0,
            "f_ffree": 0,
            "f_namemax": 255,
        }

    # -------------------------------------------------------------- bytes
    @mfusepy.overrides(mfusepy.Operations)
    def open(self, path: str, fi) -> int:
        if fi.flags & _WRITE_FLAGS:
            raise mfusepy.FuseOSError(errno.EROFS)
        if path == STATUS_PATH:  # a snapshot per open; direct_io so the size may differ
            fh = next(self._fh_counter)
            with self._lock:
                self._files[fh] = self._status_bytes()
            fi.fh, fi.direct_io = fh, 1
            return 0
        self.kernel_requests["open"] += 1
        node = self._resolve(path)
        if not isinstance(node, FileNode):
            raise mfusepy.FuseOSError(errno.EISDIR)
        handle = self._cache.open(
            node.content_key,
            node.file.size_bytes,
            self._namespace.fetcher(node),
            md5_b64=node.file.md5,
        )
        fh = next(self._fh_counter)
        with self._lock:
            self._files[fh] = handle
        fi.fh = fh
        fi.keep_cache = 1 if node.immutable else 0
        if self._folder_readahead is not None:
            self._folder_readahead.on_open(path, node)
        return 0

    @mfusepy.overrides(mfusepy.Operations)
    def read(self, path: str, size: int, offset: int, fi) -> bytes:
        handle = self._files.get(fi.fh)
        if handle is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        if isinstance(handle, bytes):
            return handle[offset : offset + size]
        try:
            return handle.read(offset, size)
        except Exception as exc:
            raise _fail(exc, f"read at {offset} of", path) from None

    @mfusepy.overrides(mfusepy.Operations)
    def release(self, path: str, fi) -> int:
        with self._lock:
            handle = self._files.pop(fi.fh, None)
        if handle is not None and not isinstance(handle, bytes):
            handle.close()
        return 0

    # ------------------------------------------------------------ xattrs
    def _xattrs(self, path: str) -> dict[str, str]:
        node = self._resolve(path)
        if isinstance(node, FileNode):
            f, run = node.file, node.run
            return {
                "user.wandb.md5": f.md5 or "",
                "user.wandb.updated_at": _iso(f.updated_at),
                "user.wandb.mimetype": f.mimetype or "",
                "user.wandb.run_state": run.state or "",
                "user.wfs.cached": self._cache.state(node.content_key, f.size_bytes),
            }
        if isinstance(node, DirNode) and node.level == "run" and node.run is not None:
            run = node.run
            return {
                "user.wandb.display_name": run.display_name or "",
                "user.wandb.state": run.state or "",
                "user.wandb.created_at": _iso(run.created_at),
            }
        return {}

    @mfusepy.overrides(mfusepy.Operations)
    def listxattr(self, path: str):
        self.kernel_requests["listxattr"] += 1
        return [name for name, value in self._xattrs(path).items() if value]

    @mfusepy.overrides(mfusepy.Operations)
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        self.kernel_requests["getxattr"] += 1
        if not name.startswith("user."):
            # No ACLs, SELinux labels or trusted.* here. ENOTSUP (not ENODATA) lets
            # tools stop asking: ``ls -l`` then probes once per mount, not twice per file.
            raise mfusepy.FuseOSError(errno.ENOTSUP)
        value = self._xattrs(path).get(name)
        if not value:
            raise mfusepy.FuseOSError(mfusepy.ENOATTR)
        return value.encode()

    # -------------------------------------------------------- read-only
    def _read_only(self, *args, **kwargs):
        raise mfusepy.FuseOSError(errno.EROFS)

    create = mkdir = mknod = rmdir = unlink = rename = symlink = link = _read_only
    chmod = chown = truncate = utimens = write = setxattr = removexattr = _read_only


class WfsFUSE(mfusepy.FUSE):
    """mfusepy's FUSE with readdirplus and per-path kernel cache lifetimes.

    Stock mfusepy passes only ``st_mode`` to libfuse3's filler, so ``ls -l``
    would cost one ``getattr`` round trip per entry. Here every entry carries
    its whole ``stat`` with ``FUSE_FILL_DIR_PLUS`` and a real offset, so the
    kernel can page through a 10,000-entry folder and cache the attributes.

    With libfuse 3.12+ the session runs through ``fuse_loop.run_session``
    (libfuse's own sequence with two hooks) so ``KernelExpiry`` can invalidate
    changeable paths while the loop runs and stops before the session ends;
    the kernel then keeps immutable entries for a day instead of seconds.
    """

    def __init__(self, operations: WfsOperations, mountpoint: str, **kwargs: Any) -> None:
        lib = mfusepy._libfuse
        if not (mfusepy.fuse_version_major == 3 and fuse_loop.available(lib)):
            super().__init__(operations, mountpoint, **kwargs)
            return
        invalidate: list = []
        expiry = KernelExpiry(lambda path: invalidate[0](os.fsencode(path)), fuse_loop.gone)
        operations.expiry = expiry

        def started(fuse: int) -> None:
            invalidate.append(fuse_loop.invalidator(lib, fuse))
            expiry.start()

        def run(*args):
            return fuse_loop.run_session(lib, *args, started=started, stopping=expiry.stop)

        stock = mfusepy.fuse_main_real
        mfusepy.fuse_main_real = run  # what mfusepy's __init__ calls once its callbacks are built
        try:
            super().__init__(operations, mountpoint, **kwargs)
        finally:
            mfusepy.fuse_main_real = stock

    def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        plus = FUSE_FILL_DIR_PLUS if flags & 1 else 0
        st = mfusepy.c_stat()
        for name, attrs, next_offset in self.operations.readdir_with_offset(decoded, offset, fip.contents.fh):
            mfusepy.ctypes.memset(mfusepy.ctypes.byref(st), 0, mfusepy.ctypes.sizeof(st))
            mfusepy.set_st_attrs(st, attrs, use_ns=True)
            if filler(buf, name.encode(self.encoding, self.errors), st, next_offset, plus) != 0:
                break
        return 0
