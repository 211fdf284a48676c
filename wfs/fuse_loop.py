"""libfuse's ``fuse_main``, run step by step so wfs owns the session's life.

``fuse_main_real()`` mounts, loops and unmounts in one call. wfs needs two
things it hides: the ``struct fuse *`` while the loop runs (to tell the kernel
to forget cached attributes whose TTL ended, ``fuse_invalidate_path``), and a
moment after the loop ends but before the session's ``/dev/fuse`` descriptor
is closed, to stop doing so: a notification written after that close could
land in a reused descriptor (a cache file). ``run_session`` is the same
sequence as libfuse 3.12+'s ``fuse_main_real`` with those two hooks.

Only this module and ``fuse_ops`` touch libfuse. With a libfuse older than
3.12 (no ``fuse_loop_cfg_create``), ``available()`` is false and wfs keeps
libfuse's own ``fuse_main_real`` and one short global timeout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
from typing import Callable

logger = logging.getLogger(__name__)

# The versioned names pin the ABI these calls were written for (a later libfuse may move
# the default ``fuse_new``/``fuse_loop_mt`` to a new signature but keeps these).
_NEEDED = (
    "fuse_parse_cmdline_312", "fuse_new_31", "fuse_mount", "fuse_get_session", "fuse_set_signal_handlers",
    "fuse_loop", "fuse_loop_cfg_create", "fuse_loop_cfg_destroy", "fuse_loop_mt_312",
    "fuse_remove_signal_handlers", "fuse_unmount", "fuse_destroy", "fuse_opt_free_args", "fuse_invalidate_path",
)
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_CMDLINE_OPTS_BYTES = 512  # struct fuse_cmdline_opts is ~48 bytes; only its first int (singlethread) is read
_MOUNT_FAILED, _SIGNALS_FAILED, _LOOP_FAILED = 4, 6, 7  # fuse_main_real's codes


class _FuseArgs(ctypes.Structure):
    _fields_ = [("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)), ("allocated", ctypes.c_int)]


def available(lib) -> bool:
    return all(hasattr(lib, name) for name in _NEEDED)


def _declare(lib) -> None:
    vp = ctypes.c_void_p
    lib.fuse_new_31.restype = vp
    lib.fuse_new_31.argtypes = [ctypes.POINTER(_FuseArgs), vp, ctypes.c_size_t, vp]
    lib.fuse_mount.argtypes = [vp, ctypes.c_char_p]
    lib.fuse_get_session.restype = vp
    lib.fuse_get_session.argtypes = [vp]
    lib.fuse_set_signal_handlers.argtypes = [vp]
    lib.fuse_remove_signal_handlers.argtypes = [vp]
    lib.fuse_loop.argtypes = [vp]
    lib.fuse_loop_cfg_create.restype = vp
    lib.fuse_loop_cfg_destroy.argtypes = [vp]
    lib.fuse_loop_mt_312.argtypes = [vp, vp]
    lib.fuse_unmount.argtypes = [vp]
    lib.fuse_destroy.argtypes = [vp]
    lib.fuse_parse_cmdline_312.argtypes = [ctypes.POINTER(_FuseArgs), vp]
    lib.fuse_opt_free_args.argtypes = [ctypes.POINTER(_FuseArgs)]
    lib.fuse_invalidate_path.argtypes = [vp, ctypes.c_char_p]


def invalidator(lib, fuse: int) -> Callable[[bytes], int]:
    """``invalidate(path)``: the kernel drops the attributes (and pages) it caches for ``path``.

    Returns 0, or a negative errno: ``-ENOENT`` when the kernel no longer knows
    the path, ``-ENODEV``/``-ENOTCONN`` once the mount is gone.
    """
    handle = ctypes.c_void_p(fuse)

    def invalidate(path: bytes) -> int:
        return lib.fuse_invalidate_path(handle, path)

    return invalidate


def run_session(lib, argc: int, argv, ops, ops_size: int, user_data,
                *, started: Callable[[int], None], stopping: Callable[[], None]) -> int:
    """Mount, serve until unmounted or signalled, unmount; ``fuse_main_real``'s contract.

    ``started(fuse)`` runs once mounted, before the loop; ``stopping()`` after
    the loop, while the session's descriptor is still open.
    """
    _declare(lib)
    args = _FuseArgs(argc, ctypes.cast(argv, ctypes.POINTER(ctypes.c_char_p)), 0)
    opts = ctypes.create_string_buffer(_CMDLINE_OPTS_BYTES)
    if lib.fuse_parse_cmdline_312(ctypes.byref(args), opts) != 0:
        return 1
    # struct fuse_cmdline_opts: int singlethread, foreground, debug, nodefault_subtype; char *mountpoint
    # (wfs always runs in the foreground, so -f is not looked at).
    singlethread = ctypes.c_int.from_buffer(opts, 0).value
    mountpoint_ptr = ctypes.c_void_p.from_buffer(opts, 16).value
    mountpoint = ctypes.string_at(mountpoint_ptr) if mountpoint_ptr else None
    fuse = None
    try:
        fuse = lib.fuse_new_31(ctypes.byref(args), ops, ops_size, user_data)
        if not fuse:
            return 1
        if not mountpoint or lib.fuse_mount(fuse, mountpoint) != 0:
            return _MOUNT_FAILED
        session = lib.fuse_get_session(fuse)
        if lib.fuse_set_signal_handlers(session) != 0:
            lib.fuse_unmount(fuse)
            return _SIGNALS_FAILED
        started(fuse)
        try:
            if singlethread:
                res = lib.fuse_loop(fuse)
            else:
                config = lib.fuse_loop_cfg_create()
                try:
                    res = lib.fuse_loop_mt_312(fuse, config)
                finally:
                    lib.fuse_loop_cfg_destroy(config)
        finally:
            stopping()
            lib.fuse_remove_signal_handlers(session)
            lib.fuse_unmount(fuse)
        return _LOOP_FAILED if res else 0
    finally:
        if fuse:
            lib.fuse_destroy(fuse)
        lib.fuse_opt_free_args(ctypes.byref(args))
        if mountpoint_ptr:
            _libc.free(ctypes.c_void_p(mountpoint_ptr))


def gone(code: int) -> bool:
    """True when an ``invalidate`` result says the mount has ended."""
    return code in (-errno.ENODEV, -errno.ENOTCONN, -errno.EBADF)
