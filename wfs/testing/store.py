"""In-memory W&B data for the test server: entities, projects, runs, files.

Invariants:
- Everything is keyed verbatim: a file name is stored exactly as given (any
  string W&B allows: spaces, ``..``, leading ``/``, control characters...);
  nothing here maps a name to a disk path except ``load_tree``, which reads
  ``DATA/<entity>/<project>/<run_id>/<path...>``.
- One lock guards all mutation; readers get snapshots (lists/records that
  are replaced, never mutated in place), so a GraphQL page is consistent.
- A file's ``object_key`` (its opaque storage path) stays the same when the
  file is replaced, like an overwritten S3 key; ``updated_at`` strictly
  increases on each ``put_file`` of an existing name.
- Times are POSIX seconds (float, UTC); defaults are whole seconds, so what
  the API reports (1 s resolution) equals what is stored.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import mimetypes
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from wfs.testing.content import Content, DiskContent, Generated, as_content

logger = logging.getLogger(__name__)

RUN_META_FILE = "_wfs_run.json"


def parse_time(value: Any) -> float | None:
    """Accept POSIX seconds or an ISO-8601 string (UTC when zone-less)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace("Z", "+00:00")
    parsed = _dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


def _token(*parts: str, size: int = 12) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:size]


@dataclass(frozen=True)
class FileRecord:
    entity: str
    project: str
    run_id: str
    name: str
    content: Content = field(repr=False)
    updated_at: float
    object_key: str
    file_id: str
    mimetype: str | None

    @property
    def size_bytes(self) -> int:
        return self.content.size_bytes

    @property
    def key(self) -> str:
        return f"{self.entity}/{self.project}/{self.run_id}/{self.name}"


@dataclass
class RunRecord:
    entity: str
    project: str
    run_id: str
    storage_id: str
    display_name: str
    state: str
    created_at: float
    heartbeat_at: float
    updated_at: float
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    tags: list = field(default_factory=list)
    files: dict[str, FileRecord] = field(default_factory=dict)


@dataclass
class ProjectRecord:
    entity: str
    name: str
    internal_id: int
    created_at: float
    runs: dict[str, RunRecord] = field(default_factory=dict)


class Store:
    """All data the server serves; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._projects: dict[tuple[str, str], ProjectRecord] = {}
        self._objects: dict[str, tuple[str, str, str, str]] = {}  # key -> file address
        self._next_project_id = 1

    # --- writes -----------------------------------------------------------
    def add_project(self, entity: str, project: str, *, created_at: Any = None) -> ProjectRecord:
        with self._lock:
            rec = self._projects.get((entity, project))
            if rec is None:
                rec = ProjectRecord(
                    entity=entity,
                    name=project,
                    internal_id=self._next_project_id,
                    created_at=parse_time(created_at) or time.time(),
                )
                self._next_project_id += 1
                self._projects[(entity, project)] = rec
            return rec

    def add_run(
        self,
        entity: str,
        project: str,
        run_id: str,
        *,
        display_name: str | None = None,
        state: str | None = None,
        created_at: Any = None,
        heartbeat_at: Any = None,
        config: dict | None = None,
        summary: dict | None = None,
        tags: Iterable[str] = (),
    ) -> RunRecord:
        """Create (or update the metadata of) a run; creates the project too."""
        with self._lock:
            proj = self.add_project(entity, project)
            now = time.time()
            run = proj.runs.get(run_id)
            created = parse_time(created_at)
            if run is None:
                created = created if created is not None else now
                run = RunRecord(
                    entity=entity,
                    project=project,
                    run_id=run_id,
                    storage_id=_token(entity, project, run_id, size=16),
                    display_name=display_name or run_id,
                    state=state or "finished",
                    created_at=created,
                    heartbeat_at=parse_time(heartbeat_at) or created,
                    updated_at=created,
                    config=dict(config or {}),
                    summary=dict(summary or {}),
                    tags=list(tags),
                )
                proj.runs[run_id] = run
            else:
                if display_name is not None:
                    run.display_name = display_name
                if state is not None:
                    run.state = state
                if created is not None:
                    run.created_at = created
                if heartbeat_at is not None:
                    run.heartbeat_at = parse_time(heartbeat_at)
                if config is not None:
                    run.config = dict(config)
                if summary is not None:
                    run.summary = dict(summary)
                if tags:
                    run.tags = list(tags)
                run.updated_at = max(now, run.updated_at)
            return run

    def set_run_state(
        self, entity: str, project: str, run_id: str, state: str, *, heartbeat_at: Any = None
    ) -> RunRecord:
        with self._lock:
            run = self._require_run(entity, project, run_id)
            run.state = state
            now = time.time()
            run.heartbeat_at = parse_time(heartbeat_at) or now
            run.updated_at = now
            return run

    def put_file(
        self,
        entity: str,
        project: str,
        run_id: str,
        name: str,
        content: "bytes | str | Generated | Content",
        *,
        updated_at: Any = None,
        mimetype: str | None = None,
    ) -> FileRecord:
        """Add or replace a file; a missing run is created (state finished)."""
        body = as_content(content)
        with self._lock:
            run = self._run(entity, project, run_id)
            if run is None:
                run = self.add_run(entity, project, run_id)
            old = run.files.get(name)
            stamp = parse_time(updated_at)
            if stamp is None:
                stamp = float(int(time.time()))  # whole seconds, like W&B's DateTime
                if old is not None:
                    # Bump by at least one second: W&B times have 1 s resolution.
                    stamp = max(stamp, old.updated_at + 1.0)
            if old is not None:
                rec = replace(old, content=body, updated_at=stamp, mimetype=mimetype or old.mimetype)
            else:
                object_key = f"wandb-runs/{run.storage_id}/{_token(run.storage_id, name, size=24)}"
                rec = FileRecord(
                    entity=entity,
                    project=project,
                    run_id=run_id,
                    name=name,
                    content=body,
                    updated_at=stamp,
                    object_key=object_key,
                    file_id=_token("file", entity, project, run_id, name, size=20),
                    mimetype=mimetype or mimetypes.guess_type(name.rsplit("/", 1)[-1])[0],
                )
                self._objects[object_key] = (entity, project, run_id, name)
            files = dict(run.files)
            files[name] = rec
            run.files = files  # replaced, never mutated: readers keep snapshots
            run.updated_at = max(run.updated_at, stamp)
            if run.state == "running":
                run.heartbeat_at = max(run.heartbeat_at, time.time())
            return rec

    def delete_file(self, entity: str, project: str, run_id: str, name: str) -> None:
        with self._lock:
            run = self._require_run(entity, project, run_id)
            files = dict(run.files)
            rec = files.pop(name)
            self._objects.pop(rec.object_key, None)
            run.files = files

    # --- reads ------------------------------------------------------------
    def _run(self, entity: str, project: str, run_id: str) -> RunRecord | None:
        proj = self._projects.get((entity, project))
        return proj.runs.get(run_id) if proj else None

    def _require_run(self, entity: str, project: str, run_id: str) -> RunRecord:
        run = self._run(entity, project, run_id)
        if run is None:
            raise KeyError(f"no run {entity}/{project}/{run_id}")
        return run

    def project(self, entity: str, project: str) -> ProjectRecord | None:
        with self._lock:
            return self._projects.get((entity, project))

    def projects(self, entity: str) -> list[ProjectRecord]:
        with self._lock:
            found = [p for (e, _), p in self._projects.items() if e == entity]
        return sorted(found, key=lambda p: p.name)

    def entities(self) -> set[str]:
        with self._lock:
            return {e for (e, _) in self._projects}

    def runs(self, entity: str, project: str) -> list[RunRecord]:
        with self._lock:
            proj = self._projects.get((entity, project))
            return list(proj.runs.values()) if proj else []

    def run(self, entity: str, project: str, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._run(entity, project, run_id)

    def files(self, entity: str, project: str, run_id: str) -> dict[str, FileRecord]:
        """A snapshot of a run's files (name -> record)."""
        with self._lock:
            run = self._run(entity, project, run_id)
            return run.files if run else {}

    def file(self, entity: str, project: str, run_id: str, name: str) -> FileRecord | None:
        return self.files(entity, project, run_id).get(name)

    def file_by_object(self, object_key: str) -> FileRecord | None:
        with self._lock:
            addr = self._objects.get(object_key)
            return self.file(*addr) if addr else None

    # --- loading a folder tree -------------------------------------------
    def load_tree(self, root: str) -> int:
        """Load ``root/<entity>/<project>/<run_id>/<path...>``; returns files loaded.

        ``<run>/_wfs_run.json`` (never served) may set ``state``,
        ``displayName``, ``createdAt``, ``heartbeatAt``, ``config``,
        ``summaryMetrics``, ``tags`` and ``generated: {name: {size, seed}}``.
        """
        count = 0
        for entity in _subdirs(root):
            for project in _subdirs(os.path.join(root, entity)):
                self.add_project(entity, project)
                for run_id in _subdirs(os.path.join(root, entity, project)):
                    run_dir = os.path.join(root, entity, project, run_id)
                    count += self._load_run(entity, project, run_id, run_dir)
        return count

    def _load_run(self, entity: str, project: str, run_id: str, run_dir: str) -> int:
        meta: dict[str, Any] = {}
        meta_path = os.path.join(run_dir, RUN_META_FILE)
        if os.path.isfile(meta_path):
            with open(meta_path, encoding="utf-8") as fh:
                meta = json.load(fh)
        self.add_run(
            entity,
            project,
            run_id,
            display_name=meta.get("displayName"),
            state=meta.get("state"),
            created_at=meta.get("createdAt"),
            heartbeat_at=meta.get("heartbeatAt"),
            config=meta.get("config"),
            summary=meta.get("summaryMetrics"),
            tags=meta.get("tags") or (),
        )
        count = 0
        for dirpath, dirnames, filenames in os.walk(run_dir):
            dirnames.sort()
            for fname in sorted(filenames):
                full = os.path.join(dirpath, fname)
                rel = os.path.relpath(full, run_dir).replace(os.sep, "/")
                if rel == RUN_META_FILE:
                    continue
                self.put_file(
                    entity, project, run_id, rel, DiskContent(full),
                    updated_at=os.path.getmtime(full),
                )
                count += 1
        for name, spec in (meta.get("generated") or {}).items():
            self.put_file(
                entity, project, run_id, name,
                Generated(int(spec["size"]), int(spec.get("seed", 0)), bool(spec.get("md5", True))),
                updated_at=spec.get("updatedAt"),
            )
            count += 1
        return count


def _subdirs(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
