"""Finding wfs mounts on this machine and reading their status (``/.wfs/status.json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATUS_FILE = Path(".wfs") / "status.json"
FSTYPE = "fuse.wfs"


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def wfs_mounts() -> list[Path]:
    """Mountpoints of every wfs mount visible to this process."""
    found = []
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == FSTYPE:
                    found.append(Path(_unescape(fields[1])))
    except OSError:
        pass
    return found


def mount_of(path: Path) -> Path | None:
    """The wfs mount that contains ``path`` (the deepest one), or None."""
    target = Path(os.path.abspath(path))
    best = None
    for mountpoint in wfs_mounts():
        if target == mountpoint or mountpoint in target.parents:
            if best is None or len(mountpoint.parts) > len(best.parts):
                best = mountpoint
    return best


def read_status(mountpoint: Path) -> dict:
    with open(mountpoint / STATUS_FILE, encoding="utf-8") as handle:
        return json.load(handle)
