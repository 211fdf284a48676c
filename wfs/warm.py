"""``wfs prefetch``: warm the cache of a mount by reading files through it.

Reading through the mount reuses everything the daemon does for a reader:
single flight, the block cache, read-ahead, the request budget. It is
resumable for free: blocks already cached cost nothing the second time.
Pages are dropped from the kernel's cache after reading so a big prefetch
does not push the user's working set out of memory.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

CHUNK_BYTES = 1 << 20


@dataclass
class WarmResult:
    files: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def collect(paths: list[Path]) -> list[tuple[Path, int]]:
    """Every regular file under ``paths`` with its size (symlinks are not followed)."""
    out: list[tuple[Path, int]] = []
    for path in paths:
        if path.is_symlink():
            path = path.resolve()
        if path.is_file():
            out.append((path, path.stat().st_size))
            continue
        for dirpath, _dirs, files in os.walk(path):
            for name in sorted(files):
                full = Path(dirpath) / name
                st = full.lstat()
                if not full.is_symlink():
                    out.append((full, st.st_size))
    return out


def _read_all(path: Path, progress) -> int:
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if not chunk:
                break
            total += len(chunk)
            progress(len(chunk))
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return total


def warm(paths: list[Path], *, jobs: int = 8, show_progress: bool | None = None) -> WarmResult:
    files = collect(paths)
    result = WarmResult()
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    # A fresh pty reports a 0x0 size, and tqdm hides bars below the last row.
    columns, rows = shutil.get_terminal_size((100, 20))
    bar = tqdm(
        total=sum(size for _, size in files),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not show_progress,
        desc="prefetch",
        file=sys.stderr,
        ncols=columns,
        nrows=rows,
    )
    lock = threading.Lock()

    def advance(n: int) -> None:
        with lock:
            bar.update(n)

    with bar, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_read_all, path, advance): path for path, _ in files}
        for future in as_completed(futures):
            path = futures[future]
            try:
                result.bytes += future.result()
                result.files += 1
            except OSError as exc:
                result.failed.append((str(path), exc.strerror or str(exc)))
            with lock:
                bar.set_postfix_str(f"{result.files}/{len(files)} files", refresh=False)
    return result
