"""Listings of runs, kept on disk so a remount re-lists them for free.

A finished run's metadata cannot change, so once listed it is written to a
small SQLite file in the cache dir and served from there after a remount.
A running run's latest listing is stored too, but only ``--offline`` serves
it (it may have changed since); an unchanged listing is not written again.
The file holds metadata only (names, sizes, md5, times): no API key and no
signed URL (``direct_url`` is dropped; reads get a fresh one through the API
host).

SQLite does the locking, so several mounts may share one cache dir. A
damaged store is set aside and rebuilt: it only ever saves requests.
Saving happens on a background thread, off the path of the listing that
asked for it; ``close`` waits for what is queued.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wfs.client.models import Run, RunFile

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    entity TEXT NOT NULL, project TEXT NOT NULL, run_id TEXT NOT NULL,
    run TEXT NOT NULL, files TEXT NOT NULL, stored_at REAL NOT NULL,
    PRIMARY KEY (entity, project, run_id)
)
"""
MAX_RUNS = 20000  # oldest listings are dropped past this
_STORED_FILE_FIELDS = tuple(f.name for f in dataclasses.fields(RunFile) if f.name != "direct_url")


class ListingStore:
    def __init__(self, path: Path):
        self._path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wfs-listing-store")
        self._written: dict[tuple[str, str, str], int] = {}  # what this process last wrote per run
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            logger.warning("metadata store %s is damaged (%s); starting a new one", path, exc)
            try:
                os.replace(path, path.with_suffix(".damaged"))
                self._db = self._open()
            except (OSError, sqlite3.Error) as again:
                logger.warning("metadata store disabled: %s", again)
        except (OSError, sqlite3.Error) as exc:
            logger.warning("metadata store disabled: %s", exc)

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(self._path, check_same_thread=False, timeout=10)
        os.chmod(self._path, 0o600)
        db.execute(_SCHEMA)
        db.commit()
        return db

    def _query(self, sql: str, args: tuple) -> list:
        if self._db is None:
            return []
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                logger.warning("metadata store read failed: %s", exc)
                return []

    def run(self, entity: str, project: str, run_id: str) -> Run | None:
        rows = self._query(
            "SELECT run FROM runs WHERE entity=? AND project=? AND run_id=?", (entity, project, run_id)
        )
        return Run(**json.loads(rows[0][0])) if rows else None

    def files(self, entity: str, project: str, run_id: str) -> list[RunFile] | None:
        rows = self._query(
            "SELECT files FROM runs WHERE entity=? AND project=? AND run_id=?", (entity, project, run_id)
        )
        return [RunFile(**item) for item in json.loads(rows[0][0])] if rows else None

    def has_project(self, entity: str, project: str) -> bool:
        return bool(self._query("SELECT 1 FROM runs WHERE entity=? AND project=? LIMIT 1", (entity, project)))

    def has_entity(self, entity: str) -> bool:
        return bool(self._query("SELECT 1 FROM runs WHERE entity=? LIMIT 1", (entity,)))

    def entities(self) -> list[str]:
        return [row[0] for row in self._query("SELECT DISTINCT entity FROM runs ORDER BY entity", ())]

    def projects(self, entity: str) -> list[str]:
        rows = self._query("SELECT DISTINCT project FROM runs WHERE entity=? ORDER BY project", (entity,))
        return [row[0] for row in rows]

    def runs(self, entity: str, project: str) -> list[Run]:
        """A project's stored runs, oldest first (as W&B lists them)."""
        rows = self._query("SELECT run FROM runs WHERE entity=? AND project=?", (entity, project))
        return sorted((Run(**json.loads(row[0])) for row in rows), key=lambda r: (r.created_at or 0.0, r.run_id))

    def save(self, run: Run, files: list[RunFile], now: float) -> None:
        """Remember a run's listing, in the background."""
        if self._db is None:
            return
        try:
            self._writer.submit(self._save, run, list(files), now)
        except RuntimeError:  # closing: this listing is simply not remembered
            pass

    def _save(self, run: Run, files: list[RunFile], now: float) -> None:
        key = (run.entity, run.project, run.run_id)
        signature = hash((run, tuple((f.name, f.size_bytes, f.updated_at, f.md5) for f in files)))
        if self._written.get(key) == signature:  # a running run re-listed unchanged
            return
        self._written[key] = signature
        run_json = json.dumps(dataclasses.asdict(run))
        files_json = json.dumps([{name: getattr(f, name) for name in _STORED_FILE_FIELDS} for f in files])
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                    (run.entity, run.project, run.run_id, run_json, files_json, now),
                )
                self._db.execute(
                    "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs ORDER BY stored_at DESC LIMIT -1 OFFSET ?)",
                    (MAX_RUNS,),
                )
                self._db.commit()
            except sqlite3.Error as exc:  # a full disk must not break listings
                logger.warning("could not store the listing of %s/%s/%s: %s", run.entity, run.project, run.run_id, exc)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
