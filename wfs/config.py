"""One frozen ``WfsConfig`` built by the CLI (or the Python API) and passed down.

Nothing below the CLI reads the environment: credentials come from
``wfs.credentials`` (called by the CLI), every tunable lives here with its
unit in its name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": TIB}


def parse_size(text: str) -> int:
    """Parse ``10G``, ``512M``, ``64MiB``, ``1.5T`` or a plain byte count (binary units)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (use a number with an optional K, M, G or T suffix)")
    number, unit, _ = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wfs"


@dataclass(frozen=True)
class WfsConfig:
    base_url: str
    api_key: str = field(repr=False)
    cache_dir: Path = field(default_factory=default_cache_dir)
    cache_max_bytes: int = 10 * GIB
    block_size_bytes: int = 8 * MIB
    # How long metadata may be served before asking W&B again.
    ttl_running_seconds: float = 5.0  # files of a running run (live output.log)
    dir_cache_time_seconds: float = 60.0  # entity, project and run lists
    negative_ttl_seconds: float = 10.0  # "no such file" answers
    hide_internal_files: bool = False  # hide artifact/<id>/wandb_manifest.json entries
    # Network.
    page_size: int = 1000
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 30.0
    max_retries: int = 5
    backoff_factor_seconds: float = 1.0  # retry n sleeps about factor * 2**n (+ jitter)
    backoff_max_seconds: float = 10.0  # cap of one sleep, Retry-After / RateLimit-Reset included
    operation_timeout_seconds: float = 30.0  # one client call, retries included: bounds every FUSE call
    max_requests_per_second: float = 1.0  # GraphQL token bucket (W&B asks for about 1/s); 0: no limit
    request_burst: float = 20.0  # GraphQL requests allowed at once before the rate applies
    max_byte_requests_per_second: float = 200.0  # byte-range requests, mostly to storage, not the W&B API; 0: no limit
    offline_cooldown_seconds: float = 5.0  # after W&B is seen unreachable, fail at once this long
    offline: bool = False  # serve from the cache and the stored listings only; no network
    # FUSE.
    subpath: str = ""
    allow_other: bool = False
    fuse_options: tuple[str, ...] = ()
