"""Mount lifecycle: checks before mounting, the daemon, readiness, unmount.

Used by the CLI and the Python API. Every failure the user can cause is a
``MountError`` whose message is one line meant for a person (no traceback).

Invariants:

* ``wfs mount`` (background) returns only once the kernel has the mount up
  (the daemon's FUSE ``init`` ran), or fails with the daemon's own reason.
* The API key never travels on a command line: the daemon resolves it from
  the same environment and netrc as the parent.
* A stale mount left by a killed daemon ("Transport endpoint is not
  connected") is cleared before mounting on the same mountpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0


class MountError(Exception):
    """A mount or unmount failed for a reason the user can act on."""


def fusermount() -> str:
    binary = shutil.which("fusermount3")
    if binary is None:
        raise MountError("FUSE is not installed: fusermount3 is missing (Debian: apt-get install fuse3)")
    return binary


def check_fuse() -> None:
    fusermount()
    if not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is not available: /dev/fuse is missing (in a container, pass --device /dev/fuse)")


def _is_stale(path: Path) -> bool:
    """A FUSE mount whose daemon is gone. ``stat`` alone can pass on attributes
    the kernel still caches; opening the folder always reaches the daemon."""
    try:
        os.stat(path)
        with os.scandir(path):
            pass
    except OSError as exc:
        return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def check_mountpoint(path: Path) -> None:
    """Make sure ``path`` can be mounted on; clear a stale wfs mount left by a dead daemon."""
    if _is_stale(path):
        logger.warning("clearing a stale mount at %s", path)
        subprocess.run([fusermount(), "-uz", str(path)], capture_output=True, timeout=30)
        if _is_stale(path):
            raise MountError(f"{path} holds a stale mount that could not be cleared (try: fusermount3 -uz {path})")
    if not path.exists():
        raise MountError(f"mountpoint {path} does not exist")
    if not path.is_dir():
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"mountpoint {path} is busy: something is already mounted there")
    if not os.access(path, os.R_OK | os.X_OK):
        raise MountError(f"mountpoint {path} is not accessible")


def secure_cache_dir(path: Path) -> None:
    """Create the cache dir 0700, or tighten an existing one we own to 0700.

    Blocks, the listing store and locks live there; other users must not read
    what this user's key could read.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.stat()
    except OSError as exc:
        raise MountError(f"cannot create the cache dir {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"the cache dir {path} is not a directory")
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o700:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise MountError(f"cannot make the cache dir {path} private: {exc.strerror or exc}") from None
    elif st.st_uid != os.getuid():
        raise MountError(f"the cache dir {path} belongs to another user")


def wait_mounted(path: Path, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if os.path.ismount(path):
            return True
        time.sleep(0.02)
    return False


def spawn_daemon(argv: list[str], mountpoint: Path, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> int:
    """Start ``wfs mount -f`` in its own session and wait until it is mounted.

    The daemon reports over a pipe: ``ok`` once FUSE is initialised, or
    ``error: <reason>``. Returns the daemon's pid.
    """
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "wfs", *argv, "--foreground", "--ready-fd", str(write_fd)]
    try:
        child = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,),
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(write_fd)
    try:
        message = _read_status(read_fd, child, timeout_seconds)
    finally:
        os.close(read_fd)
    if message == "ok" and wait_mounted(mountpoint, 10.0):
        return child.pid
    if child.poll() is None:
        child.terminate()
    if message.startswith("error: "):
        raise MountError(message[len("error: ") :])
    if message == "ok":
        raise MountError(
            f"the daemon started but {mountpoint} did not stay mounted (a FUSE -o option rejected by the kernel?)"
        )
    raise MountError(f"the wfs daemon did not come up within {timeout_seconds:.0f}s ({message or 'no answer'})")


def _read_status(fd: int, child: subprocess.Popen, timeout_seconds: float) -> str:
    deadline = time.monotonic() + timeout_seconds
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # the daemon closed the pipe (exited or is done talking)
            data += chunk
            if b"\n" in data:
                break
        elif child.poll() is not None and not data:
            break
    return data.decode("utf-8", "replace").strip().splitlines()[0] if data.strip() else ""


class ReadyPipe:
    """The daemon's side of the readiness pipe (or nothing in plain foreground mode)."""

    def __init__(self, fd: int | None):
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: str) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                os.write(self._fd, (message.replace("\n", " ") + "\n").encode())
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def unmount(mountpoint: Path, *, lazy: bool = False, timeout_seconds: float = 30.0) -> None:
    """Unmount a wfs mount; the daemon then exits by itself."""
    if not os.path.ismount(mountpoint) and not _is_stale(mountpoint):
        raise MountError(f"{mountpoint} is not mounted")
    cmd = [fusermount(), "-uz" if lazy else "-u", str(mountpoint)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_seconds)
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        detail = reason[-1] if reason else f"exit {result.returncode}"
        if "busy" in detail.lower():
            raise MountError(f"{mountpoint} is busy (a program still uses it); close it or use --lazy")
        raise MountError(f"could not unmount {mountpoint}: {detail}")


def tune_readahead(mountpoint: Path, read_ahead_kb: int = 1024) -> None:
    """Raise the kernel's read-ahead for this mount (1 MiB requests instead of 128 KiB).

    Needs root; silently skipped otherwise. See docs/ARCHITECTURE.md.
    """
    try:
        st_dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb"
        with open(path, "w") as handle:
            handle.write(str(read_ahead_kb))
        logger.debug("read_ahead_kb=%d for %s", read_ahead_kb, mountpoint)
    except OSError as exc:
        logger.debug("could not raise read-ahead for %s: %s", mountpoint, exc)
