"""Plain, immutable records of the W&B objects wfs shows.

Invariants: times are POSIX seconds (float, UTC); ``Run.run_id`` is the run's
``name`` in the API (the path component), never its display name;
``RunFile.name`` is the slash-separated path inside the run, exactly as W&B
returns it (no normalisation here: that is the namespace's job).
"""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass, field

# Run states whose metadata and files can no longer change.
FINISHED_STATES = frozenset({"finished", "crashed", "failed", "killed", "preempted"})


@functools.lru_cache(maxsize=4096)  # a run's files share few distinct times
def parse_wandb_time(value: str | None) -> float | None:
    """Parse a W&B DateTime into POSIX seconds.

    Accepts ``2023-11-05T17:46:35``, with ``Z`` or an offset, and with
    fractions of any length. W&B times are UTC when they carry no zone.
    """
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # fromisoformat in 3.11 accepts 1-6 fraction digits only; trim longer ones.
    date_part, sep, rest = text.partition(".")
    if sep:
        digits = ""
        tail = ""
        for i, ch in enumerate(rest):
            if not ch.isdigit():
                tail = rest[i:]
                break
            digits += ch
        text = f"{date_part}.{digits[:6] or '0'}{tail}"
    parsed = _dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


@dataclass(frozen=True)
class Viewer:
    username: str
    entity: str
    teams: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    entity: str
    name: str
    created_at: float | None = None


@dataclass(frozen=True)
class Run:
    entity: str
    project: str
    run_id: str
    display_name: str | None = None
    state: str | None = None
    created_at: float | None = None
    heartbeat_at: float | None = None
    storage_id: str | None = None

    @property
    def is_finished(self) -> bool:
        """True once the run can no longer change (its files are immutable)."""
        return (self.state or "").lower() in FINISHED_STATES


@dataclass(frozen=True)
class RunFile:
    entity: str
    project: str
    run_id: str
    name: str
    size_bytes: int
    updated_at: float | None = None
    md5: str | None = None
    url: str | None = None
    direct_url: str | None = field(default=None, repr=False)  # signed: never log it
    mimetype: str | None = None
    file_id: str | None = None
