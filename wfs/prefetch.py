"""Folder read-ahead: when a program walks a folder file by file, fetch what comes next.

``cp -r``, ``tar`` and data loaders open the files of a folder one after the
other, in listing order. One round trip per small file makes such a copy
latency-bound. ``FolderReadAhead`` watches opens per folder; once two opens
in a row move forward through the listing, it asks the cache to warm the next
small files in the background (the cache's worker pool bounds the parallel
requests, and the client's request budget bounds their rate). The window
doubles while the walk continues, up to ``max_files``; a jump elsewhere
resets it. A single ``cat`` of one file prefetches nothing.

Knows namespace nodes and the cache's ``prefetch``; never blocks an ``open``
(all fetching happens on the cache's workers) and never raises.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from cachetools import TTLCache

from wfs.namespace import FileNode, Namespace

logger = logging.getLogger(__name__)


@dataclass
class _Walk:
    last_index: int = -1
    streak: int = 0
    scheduled_until: int = -1  # highest listing index already handed to the cache
    names: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    nodes: list = field(default_factory=list)


class FolderReadAhead:
    def __init__(
        self,
        namespace: Namespace,
        cache,
        *,
        max_file_bytes: int,
        max_files: int = 64,
        first_window: int = 8,
        listing_ttl_seconds: float = 5.0,
    ):
        self._namespace = namespace
        self._cache = cache
        self._max_file_bytes = max_file_bytes
        self._max_files = max_files
        self._first_window = first_window
        self._walks: TTLCache = TTLCache(maxsize=256, ttl=listing_ttl_seconds)
        self._first_open: TTLCache = TTLCache(maxsize=1024, ttl=listing_ttl_seconds)
        self._lock = threading.Lock()

    def _walk(self, folder: str) -> _Walk | None:
        with self._lock:
            walk = self._walks.get(folder)
        if walk is not None:
            return walk
        try:
            entries = self._namespace.list(folder)  # may cost a listing: not under the lock
        except Exception as exc:  # read-ahead is best effort
            logger.debug("no folder read-ahead for %s: %s", folder, exc)
            return None
        walk = _Walk(
            names=[name for name, _ in entries],
            index={name: i for i, (name, _) in enumerate(entries)},
            nodes=[node for _, node in entries],
        )
        with self._lock:
            return self._walks.setdefault(folder, walk)

    def on_open(self, path: str, node: FileNode) -> None:
        """Note that ``path`` was opened; maybe warm the files after it."""
        folder, _, name = path.rpartition("/")
        folder = folder or "/"
        with self._lock:
            known = folder in self._walks
            previous = self._first_open.get(folder)
            if not known and previous in (None, name):
                self._first_open[folder] = name  # one open is no walk: do not even list
                return
        walk = self._walk(folder)
        if walk is None or name not in walk.index:
            return
        with self._lock:
            if not known and previous in walk.index:
                walk.last_index = walk.index[previous]
            position = walk.index[name]
            moving_forward = 0 < position - walk.last_index <= 2
            walk.streak = walk.streak + 1 if moving_forward else 0
            walk.last_index = position
            if walk.streak == 0:
                return
            window = min(self._first_window << (walk.streak - 1), self._max_files)
            start = max(position + 1, walk.scheduled_until + 1)
            stop = min(position + 1 + window, len(walk.nodes))
            todo = [n for n in walk.nodes[start:stop] if self._worth_it(n)]
            walk.scheduled_until = max(walk.scheduled_until, stop - 1)
        for sibling in todo:
            try:
                self._cache.prefetch(
                    sibling.content_key,
                    sibling.file.size_bytes,
                    self._namespace.fetcher(sibling),
                    md5_b64=sibling.file.md5,
                )
            except Exception as exc:
                logger.debug("folder read-ahead of %s failed: %s", sibling.file.name, exc)

    def _worth_it(self, node) -> bool:
        return isinstance(node, FileNode) and 0 < node.file.size_bytes <= self._max_file_bytes
