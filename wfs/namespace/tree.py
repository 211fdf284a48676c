"""Maps mount paths to W&B objects: ``/<entity>/<project>/<run_id>/<name...>``.

What stays true:

* ``/`` lists the viewer's entity and teams; any other entity is reachable by
  name (``cd /mnt/other-team`` works though ``/`` does not list it).
* A listing is never served past its TTL while W&B answers: files of a
  finished run never expire, a running run's after ``ttl_running_seconds``,
  entity/project/run lists after ``dir_cache_time_seconds``, "not found"
  answers after ``negative_ttl_seconds``. When W&B cannot be reached, what
  was already listed is served stale (``Memo``).
* Probe names (``.git``, ``.DS_Store``…) never cost a request.
* This module knows paths and W&B objects, not FUSE, errno or blocks. It
  raises ``wfs.client.errors`` exceptions; the FUSE layer maps them.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Union

from wfs.client.errors import NotFound, TransientError
from wfs.client.models import Project, Run, RunFile, Viewer
from wfs.config import WfsConfig
from wfs.namespace.memo import Memo
from wfs.namespace.paths import display_links, is_probe_name, split_path
from wfs.namespace.runpages import RunPages
from wfs.namespace.runtree import DirEntry, RunTree
from wfs.namespace.store import ListingStore

logger = logging.getLogger(__name__)

_MISSING = object()  # memoised "not found"
_ROOT_KERNEL_TTL_SECONDS = 1.0
_INTERNAL_FILE = re.compile(r"^artifact/[^/]+/wandb_manifest\.json$")


@dataclass(frozen=True)
class DirNode:
    """A folder: the root, an entity, a project, a run, or a folder inside a run."""

    level: str  # "root" | "entity" | "project" | "run" | "folder"
    mtime: float = 0.0
    run: Run | None = None


@dataclass(frozen=True)
class FileNode:
    file: RunFile
    run: Run

    @property
    def immutable(self) -> bool:
        """The bytes behind this node cannot change (the run has ended)."""
        return self.run.is_finished

    @property
    def content_key(self) -> str:
        """What makes the content unique: md5 and size, else the W&B path and version."""
        f = self.file
        if f.md5:
            return f"md5:{f.md5}:{f.size_bytes}"
        return f"path:{f.entity}/{f.project}/{f.run_id}/{f.name}@{f.updated_at}:{f.size_bytes}"


@dataclass(frozen=True)
class LinkNode:
    """A run by its display name: a symlink to the run-id folder beside it."""

    target: str
    mtime: float = 0.0


Node = Union[DirNode, FileNode, LinkNode]


def _run_time(run: Run) -> float:
    return run.heartbeat_at or run.created_at or 0.0


def _is_plain(component: str) -> bool:
    """True when a displayed component is, unchanged, the W&B name component.

    Renamed (``~2``, ``~file``, shortened) and escaped (``%2E%2E``) components
    need the run's full listing to map back; plain ones can be looked up exactly.
    """
    return "~" not in component and "%" not in component


class Namespace:
    """Resolves and lists mount paths, caching W&B metadata by the rules above."""

    def __init__(self, client, config: WfsConfig, viewer: Viewer | None = None, store: ListingStore | None = None):
        self._client = client
        self._config = config
        self._viewer = viewer
        self._store = store
        self._subpath = split_path(config.subpath)
        self._memo: Memo = Memo(maxsize=16384)

    # ----------------------------------------------------------- TTL policy
    def _dir_ttl(self, _value=None) -> float:
        return self._config.dir_cache_time_seconds

    def _lookup_ttl(self, value) -> float:
        if value is _MISSING:
            return self._config.negative_ttl_seconds
        return self._config.dir_cache_time_seconds

    def _run_ttl(self, run: Run) -> float:
        return math.inf if run.is_finished else self._config.ttl_running_seconds

    def kernel_ttl(self, node: Node) -> float:
        """How long the kernel may keep ``node``'s entry and attributes (``math.inf``: for good)."""
        if isinstance(node, FileNode) or (isinstance(node, DirNode) and node.level == "folder"):
            return self._run_ttl(node.run)
        if isinstance(node, LinkNode) or node.level in ("entity", "project"):
            return self._config.dir_cache_time_seconds
        if node.level == "run":  # it exists while it is listed; a running one's times change
            return min(self._run_ttl(node.run), self._config.dir_cache_time_seconds)
        return _ROOT_KERNEL_TTL_SECONDS  # free to answer; short so a dead mount shows as one at once

    # ---------------------------------------------------------- W&B objects
    def viewer(self) -> Viewer:
        if self._viewer is None:
            self._viewer = self._memo.get(("viewer",), self._client.viewer, lambda _v: math.inf)
        return self._viewer

    def _known_entities(self) -> list[str]:
        try:
            viewer = self.viewer()
        except TransientError:
            if not self._store:
                raise
            return self._store.entities()  # offline, viewer never seen: the entities stored
        return list(dict.fromkeys([viewer.entity, *viewer.teams]))

    def _maybe(self, key, load: Callable):
        def guarded():
            try:
                return load()
            except NotFound:
                return _MISSING

        value = self._memo.get(key, guarded, self._lookup_ttl)
        if value is _MISSING:
            raise NotFound("/".join(key[1:]))
        return value

    def _entity(self, entity: str) -> None:
        if entity in self._known_entities():
            return

        def load():
            if self._store and self._store.has_entity(entity):
                return True
            return self._client.entity_exists(entity) or _MISSING

        self._maybe(("entity", entity), load)

    def _online_or_stored(self, online: Callable, stored: Callable):
        """``online()``; with ``--offline``, what the listing store holds instead."""
        try:
            return online()
        except TransientError:
            if not (self._config.offline and self._store):
                raise
            return stored()

    def _projects(self, entity: str) -> dict[str, Project]:
        def load():
            return self._online_or_stored(
                lambda: {p.name: p for p in self._client.iter_projects(entity)},
                lambda: {name: Project(entity, name) for name in self._store.projects(entity)},
            )

        return self._memo.get(("projects", entity), load, self._dir_ttl)

    def _project(self, entity: str, project: str) -> Project:
        listed = self._memo.peek(("projects", entity))
        if listed is not None:
            if project in listed:
                return listed[project]
            raise NotFound(f"{entity}/{project}")
        def load():
            if self._store and self._store.has_project(entity, project):
                return Project(entity, project)
            return self._client.project(entity, project)

        return self._maybe(("project", entity, project), load)

    def _project_listing(self, entity: str, project: str) -> "ProjectListing":
        """The project's runs, paged in as listings reach them (nothing is fetched here)."""
        key = ("runs", entity, project)

        def fetch(after: str | None) -> tuple[list[Run], str | None]:
            return self._online_or_stored(
                lambda: self._client.runs_page(entity, project, after),
                lambda: (self._store.runs(entity, project) if after is None else [], None),
            )

        def remember(run: Run) -> None:  # later lookups of this run cost nothing
            self._memo.put(("run", entity, project, run.run_id), run, self._dir_ttl())

        def load() -> ProjectListing:
            previous = self._memo.peek(key, expired=True)
            pages = RunPages(fetch, on_run=remember, previous=previous.pages if previous else None)
            return ProjectListing(pages)

        return self._memo.get(key, load, self._dir_ttl)

    def _run(self, entity: str, project: str, run_id: str) -> Run:
        def load():
            stored = self._store.run(entity, project, run_id) if self._store else None
            if stored is not None and stored.is_finished:
                return stored
            return self._online_or_stored(
                lambda: self._client.run(entity, project, run_id),
                lambda: _found(stored, f"{entity}/{project}/{run_id}"),
            )

        return self._maybe(("run", entity, project, run_id), load)

    def _shown(self, run_file: RunFile) -> bool:
        return not (self._config.hide_internal_files and _INTERNAL_FILE.match(run_file.name))

    def _stored(self, run: Run) -> bool:
        return bool(self._store and run.is_finished and self._store.run(run.entity, run.project, run.run_id))

    def _run_tree(self, run: Run) -> RunTree:
        def load():
            files = None
            if self._store and run.is_finished:
                files = self._store.files(run.entity, run.project, run.run_id)
            if files is None:
                files = self._online_or_stored(
                    lambda: list(self._client.iter_run_files(run.entity, run.project, run.run_id)),
                    lambda: _found(self._store.files(run.entity, run.project, run.run_id), run.run_id),
                )
                if self._store:
                    self._store.save(run, files, time.time())
            return RunTree(f for f in files if self._shown(f))

        key = ("files", run.entity, run.project, run.run_id)
        return self._memo.get(key, load, lambda _tree: self._run_ttl(run))

    # ---------------------------------------------------------------- paths
    def _absolute(self, path: str) -> tuple[str, ...]:
        return self._subpath + split_path(path)

    def resolve(self, path: str) -> Node:
        """The node at ``path``; raises ``NotFound`` (or another ``WandbError``)."""
        parts = self._absolute(path)
        if any(is_probe_name(part) for part in parts[:3]):
            raise NotFound(path)
        if not parts:
            return DirNode("root")
        self._entity(parts[0])
        if len(parts) == 1:
            return DirNode("entity")
        if len(parts) == 2:
            project = self._project(parts[0], parts[1])
            return DirNode("project", mtime=project.created_at or 0.0)
        try:
            run = self._run(parts[0], parts[1], parts[2])
        except NotFound:
            if len(parts) == 3:
                link = self._display_link(parts[0], parts[1], parts[2])
                if link is not None:
                    return link
            raise
        if len(parts) == 3:
            return DirNode("run", mtime=_run_time(run), run=run)
        inner = parts[3:]
        tree = self._memo.peek(("files", run.entity, run.project, run.run_id))
        if tree is None and self._stored(run):
            tree = self._run_tree(run)  # free: read from the listing store
        if tree is None:
            if any(is_probe_name(part) for part in inner):
                raise NotFound(path)
            hidden_area = self._config.hide_internal_files and inner[0] == "artifact"
            if not hidden_area and all(_is_plain(part) for part in inner):
                return self._lookup(run, inner)
            tree = self._run_tree(run)
        entry = tree.lookup(inner)
        if entry is None:
            raise NotFound(path)
        if isinstance(entry, DirEntry):
            return DirNode("folder", mtime=entry.mtime, run=run)
        return FileNode(entry.file, run)

    def _display_link(self, entity: str, project: str, name: str) -> LinkNode | None:
        """The run that ``name`` (a display-name symlink) points to, if any."""
        listed = self._memo.peek(("runs", entity, project))
        if listed is not None and listed.pages.complete:
            return listed.link(name)
        # Not listed yet: ask W&B for the runs with that display name (one request).
        base = name.rpartition("~")[0] if "~" in name else name
        if not base or "%" in base or "~" in base:
            return None

        def load():
            return list(self._client.iter_runs(entity, project, display_name=base))

        named = self._memo.get(("named", entity, project, base), load, self._dir_ttl)
        target = display_links(named).get(name)
        if target is None:
            return None
        run = next(r for r in named if r.run_id == target)
        return LinkNode(target, _run_time(run))

    def _lookup(self, run: Run, inner: tuple[str, ...]) -> Node:
        """Resolve a path inside a run whose listing is not loaded: one exact look-up."""
        name = "/".join(inner)
        key = ("lookup", run.entity, run.project, run.run_id, name)

        def load():
            try:
                return self._client.lookup_name(run.entity, run.project, run.run_id, name)
            except NotFound:
                return _MISSING

        def ttl(found) -> float:
            if found is _MISSING or (found.file is None and not found.is_folder):
                return self._config.negative_ttl_seconds
            return self._run_ttl(found.run)

        found = self._memo.get(key, load, ttl)
        if found is _MISSING:
            raise NotFound(name)
        if found.is_folder:
            return DirNode("folder", mtime=_run_time(found.run), run=found.run)
        if found.file is None or not self._shown(found.file):
            raise NotFound(f"{run.entity}/{run.project}/{run.run_id}/{name}")
        return FileNode(found.file, found.run)

    def listing(self, path: str) -> "Listing":
        """The entries of the folder at ``path``, by position.

        A project's runs are fetched a page at a time as positions reach them;
        every other folder is listed whole (one run's files are one listing).
        """
        parts = self._absolute(path)
        node = self.resolve(path)
        if not isinstance(node, DirNode):
            raise NotADirectoryError(path)
        if node.level == "root":
            return Listing([(name, DirNode("entity")) for name in self._known_entities()])
        if node.level == "entity":
            return Listing([
                (name, DirNode("project", mtime=p.created_at or 0.0))
                for name, p in sorted(self._projects(parts[0]).items())
            ])
        if node.level == "project":
            return self._project_listing(parts[0], parts[1])
        run = node.run
        assert run is not None
        entry = self._run_tree(run).lookup(parts[3:])
        assert isinstance(entry, DirEntry)
        out: list[tuple[str, Node]] = []
        for name, child in sorted(entry.children.items()):
            if isinstance(child, DirEntry):
                out.append((name, DirNode("folder", mtime=child.mtime, run=run)))
            else:
                out.append((name, FileNode(child.file, run)))
        return Listing(out)

    def list(self, path: str) -> list[tuple[str, Node]]:
        """Every entry of the folder at ``path`` (all pages of a project's runs)."""
        return self.listing(path).all()

    def fetcher(self, node: FileNode) -> Callable[[int, int], bytes]:
        """A ``fetch(start, end)`` for the cache engine that reads ``node``'s bytes."""
        run_file = node.file
        client = self._client

        def fetch(start: int, end: int) -> bytes:
            return client.read_range(run_file, start, end)

        return fetch


class Listing:
    """A folder's entries, ``entry(i)`` by position; ``None`` past the end."""

    def __init__(self, entries: list[tuple[str, Node]]) -> None:
        self._entries = entries

    def entry(self, index: int) -> tuple[str, Node] | None:
        return self._entries[index] if index < len(self._entries) else None

    def all(self) -> list[tuple[str, Node]]:
        return list(self._entries)


class ProjectListing(Listing):
    """Run folders in the server's order (oldest first), then the display-name links.

    Reading position ``i`` fetches only the pages up to run ``i``; the links
    come last because their names depend on every run (``display_links``).
    """

    def __init__(self, pages: RunPages) -> None:
        super().__init__([])
        self.pages = pages
        self._links: list[tuple[str, Node]] | None = None
        self._link_of: dict[str, Node] = {}

    def entry(self, index: int) -> tuple[str, Node] | None:
        run = self.pages.run(index)
        if run is not None:
            return _run_entry(run)
        links = self._display_links()
        rest = index - len(self.pages)  # run() returned None: every page is loaded
        return links[rest] if rest < len(links) else None

    def all(self) -> list[tuple[str, Node]]:
        return [_run_entry(run) for run in self.pages.all()] + self._display_links()

    def link(self, name: str) -> LinkNode | None:
        """The display-name link called ``name`` (fetches every page if not loaded)."""
        self._display_links()
        node = self._link_of.get(name)
        return node if isinstance(node, LinkNode) else None

    def _display_links(self) -> list[tuple[str, Node]]:
        if self._links is None:
            runs = self.pages.all()
            by_id = {r.run_id: r for r in runs}
            links = display_links(runs, frozenset(by_id))
            self._link_of = {name: LinkNode(run_id, _run_time(by_id[run_id])) for name, run_id in links.items()}
            self._links = sorted(self._link_of.items())
        return self._links


def _found(value, what: str):
    """``value`` from the listing store, or ``TransientError`` when it holds nothing (offline)."""
    if value is None:
        raise TransientError(f"offline, and {what} was never listed here")
    return value


def _run_entry(run: Run) -> tuple[str, Node]:
    return run.run_id, DirNode("run", mtime=_run_time(run), run=run)
