"""A project's runs, loaded one page at a time as a listing reaches them.

What stays true:

* Nothing is fetched until someone asks for a position past what is loaded;
  then exactly the next page is fetched (one request), so ``ls | head`` or an
  ``os.scandir`` that stops early never pays for a 10,000-run project.
* Runs keep the server's order (oldest first); a page once loaded is never
  reordered, so positions handed to the kernel as readdir offsets stay valid.
* Many threads asking at once cause one request per page (a lock around the
  fetch). A failed fetch loses nothing: the same page is asked again next time.
  A page that brings no run not already listed ends the listing (a server
  whose cursors go round cannot make a reader fetch forever).
* When a page cannot be fetched because W&B is unreachable and an earlier,
  expired listing of the project is known, that listing is served instead
  (stale beats an error while W&B is down), like ``Memo`` does for the rest.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from wfs.client.errors import TransientError
from wfs.client.models import Run

logger = logging.getLogger(__name__)

# fetch(after) -> (runs of that page, cursor of the next page or None after the last)
FetchPage = Callable[[str | None], tuple[list[Run], str | None]]


class RunPages:
    def __init__(self, fetch: FetchPage, *, on_run: Callable[[Run], None] | None = None,
                 previous: "RunPages | None" = None) -> None:
        self._fetch = fetch
        self._on_run = on_run
        # What the previous listing had loaded (a copy: listings never chain to older ones).
        self._fallback = previous.loaded() if previous is not None else None
        self._runs: list[Run] = []
        self._ids: set[str] = set()
        self._cursor: str | None = None
        self._complete = False
        self._lock = threading.Lock()

    @classmethod
    def of(cls, runs: list[Run]) -> "RunPages":
        """A listing already complete (read from the listing store)."""
        pages = cls(lambda _after: ([], None))
        pages._add(runs)
        pages._complete = True
        return pages

    @property
    def complete(self) -> bool:
        return self._complete

    def __len__(self) -> int:
        """How many runs are loaded (all of them once ``complete``)."""
        with self._lock:
            return len(self._runs)

    def run(self, index: int) -> Run | None:
        """The run at position ``index`` (None past the last), fetching pages up to it."""
        with self._lock:
            while len(self._runs) <= index and not self._complete:
                self._next_page()
            return self._runs[index] if index < len(self._runs) else None

    def all(self) -> list[Run]:
        with self._lock:
            while not self._complete:
                self._next_page()
            return list(self._runs)

    def loaded(self) -> tuple[list[Run], bool]:
        """What is loaded now and whether that is all of it; never fetches."""
        with self._lock:
            return list(self._runs), self._complete

    def _next_page(self) -> None:
        try:
            runs, cursor = self._fetch(self._cursor)
        except TransientError as exc:
            fallback, self._fallback = self._fallback, None
            if fallback is None:
                raise
            runs, complete = fallback
            if len(runs) <= len(self._runs):
                raise
            logger.warning("W&B unreachable, serving the previous run listing: %s", exc)
            self._add(runs[len(self._runs):])
            self._complete = complete
            return
        before = len(self._runs)
        self._add(runs)
        if cursor is not None and len(self._runs) == before:  # cursors going round: stop, do not spin
            logger.warning("a page of runs brought nothing new; the listing ends there")
            cursor = None
        self._cursor, self._complete = cursor, cursor is None
        if self._complete:
            self._fallback = None

    def _add(self, runs: list[Run]) -> None:
        for run in runs:
            if run.run_id in self._ids:  # a page boundary moved under us: no repeats
                continue
            self._ids.add(run.run_id)
            self._runs.append(run)
            if self._on_run is not None:
                self._on_run(run)
