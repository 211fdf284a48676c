"""The Python API: ``with wfs.mount("~/wandb", "entity/project") as root: ...``.

For notebooks and test suites. Mounts in the background exactly like
``wfs mount`` (same options, same checks, same one-line errors as
``MountError``) and always unmounts on exit, also when the block raises.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from wfs.mounting import MountError, unmount


@contextlib.contextmanager
def mount(
    mountpoint: str | Path,
    subpath: str = "",
    *,
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
    cache_max_size: str | int | None = None,
    dir_cache_time: float | None = None,
    running_ttl: float | None = None,
    allow_other: bool = False,
    hide_internal_files: bool = False,
    log_file: str | Path | None = None,
    log_level: str | None = None,
    options: tuple[str, ...] = (),
) -> Iterator[Path]:
    """Mount W&B at ``mountpoint`` (created if missing) for the duration of the ``with`` block."""
    root = Path(mountpoint).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    args = ["mount", str(root)] + ([subpath] if subpath else [])
    for flag, value in (
        ("--base-url", base_url),
        ("--cache-dir", cache_dir),
        ("--cache-max-size", cache_max_size),
        ("--dir-cache-time", dir_cache_time),
        ("--running-ttl", running_ttl),
        ("--log-file", log_file),
        ("--log-level", log_level),
    ):
        if value is not None:
            args += [flag, str(value)]
    if allow_other:
        args.append("--allow-other")
    if hide_internal_files:
        args.append("--hide-internal-files")
    for option in options:
        args += ["-o", option]
    result = subprocess.run([sys.executable, "-m", "wfs", *args], capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise MountError(lines[-1].removeprefix("wfs: ") if lines else f"wfs mount exited with {result.returncode}")
    try:
        yield root
    finally:
        try:
            unmount(root)
        except MountError:
            unmount(root, lazy=True)
