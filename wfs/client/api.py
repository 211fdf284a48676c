"""``WandbClient``: the W&B public API as wfs needs it (GraphQL listings and byte ranges).

Job: ask W&B for entities, projects, runs and run files, and fetch byte
ranges of run files. Knows HTTP and GraphQL; knows nothing of FUSE, paths or
caches (callers cache; this module only keeps a bounded map of signed URLs).

Invariants:

* Every GraphQL answer with an ``errors`` entry is a failure, even with data.
  A missing project/run (``null``) is ``NotFound("entity/project[/run_id]")``.
* Listings are lazy, page by page, ``first`` <= 1000; paging stops when
  ``hasNextPage`` is false, and also (with a warning) on a page without
  edges or a cursor that does not advance: never an endless loop.
* A ``RunFile`` whose ``md5`` is ``"0"`` is a W&B placeholder and is never
  returned.
* ``read_range(f, start, end)`` returns exactly ``end - start`` bytes or
  raises; bytes are never returned from a response whose ``Content-Range``
  does not match the request. A cut body is resumed from where it stopped.
  An expired signed URL is refreshed through the ``url`` redirect route, and
  when that route is absent or fails, through an exact-name file look-up.
* No call takes longer than ``operation_timeout_seconds`` (retries, backoff
  and waiting for the request budget included; a paged listing has that much
  per page): past it, ``Unreachable``. GraphQL requests draw on one token
  bucket, byte requests on another (``wfs.client.limits``).
* After a host was found unreachable, calls to it fail at once (a circuit
  breaker) until a probe call after ``offline_cooldown_seconds`` gets an
  answer. With ``offline=True`` nothing is ever sent: every call raises
  ``Unreachable`` at once.
* The API key goes only to the API origin (see ``wfs.client.http``); signed
  storage URLs are never logged with their query string.
* Safe to call from many threads at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import requests
import urllib3.exceptions
from cachetools import LRUCache

from wfs.client import limits
from wfs.client.errors import AuthError, BadResponse, NotFound, TransientError, Unreachable, UrlExpired, WandbError
from wfs.client.http import (
    OriginAuth,
    RetryPolicy,
    build_session,
    host_of,
    map_request_exception,
    origin_of,
    redact_url,
    status_error,
)
from wfs.client.models import Project, Run, RunFile, Viewer, parse_wandb_time

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
PLACEHOLDER_MD5 = "0"
SIGNED_URL_CACHE_SIZE = 4096
MAX_REDIRECTS = 5
READ_CHUNK_BYTES = 1024 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_NOT_FOUND_HINTS = ("not found", "could not find", "couldn't find", "does not exist", "no such")
_DENIED_HINTS = ("permission denied", "not authorized", "unauthorized", "forbidden", "access denied")

# --- GraphQL documents (operation names let servers and logs tell them apart) ---

_Q_VIEWER = "query Viewer { viewer { id entity username teams { edges { node { name } } } } }"

_Q_ENTITY = "query Entity($name: String) { entity(name: $name) { id name isTeam } }"

_Q_PROJECTS = """query Projects($entity: String, $first: Int, $after: String) {
  models(entityName: $entity, first: $first, after: $after) {
    edges { node { id name entityName createdAt } cursor }
    pageInfo { endCursor hasNextPage }
  }
}"""

_Q_PROJECT = """query Project($entity: String, $project: String) {
  project(name: $project, entityName: $entity) { id name entityName createdAt }
}"""

_RUN_FIELDS = "id name displayName state createdAt heartbeatAt"

_Q_RUNS = f"""query Runs($entity: String, $project: String, $filters: JSONString, $order: String,
           $first: Int, $after: String) {{
  project(name: $project, entityName: $entity) {{
    runs(filters: $filters, order: $order, first: $first, after: $after) {{
      edges {{ node {{ {_RUN_FIELDS} }} cursor }}
      pageInfo {{ endCursor hasNextPage }}
    }}
  }}
}}"""

_Q_RUN = f"""query Run($entity: String, $project: String, $run: String!) {{
  project(name: $project, entityName: $entity) {{ run(name: $run) {{ {_RUN_FIELDS} }} }}
}}"""

# What wfs reads of a file. Not ``id`` (unused) nor ``url`` (may be null anyway; the
# API route is ``{base}/files/<entity>/<project>/<run>/<name>``, see ``file_url``):
# each field costs W&B work for every one of a run's thousands of files.
_FILE_FIELDS = "name directUrl sizeBytes mimetype updatedAt md5"

_Q_RUN_FILES = """query RunFiles($entity: String, $project: String, $run: String!, $names: [String],
               $first: Int, $after: String) {
  project(name: $project, entityName: $entity) {
    run(name: $run) {
      files(names: $names, first: $first, after: $after) {
        edges { node { %s } cursor }
        pageInfo { endCursor hasNextPage }
      }
    }
  }
}""" % _FILE_FIELDS

# One request answers "is NAME a file, a folder, or nothing?" for a run whose
# listing is not loaded: an exact-name look-up plus the first name under NAME/.
_Q_LOOKUP = f"""query LookupName($entity: String, $project: String, $run: String!, $names: [String],
                $pattern: String) {{
  project(name: $project, entityName: $entity) {{
    run(name: $run) {{
      {_RUN_FIELDS}
      exact: files(names: $names, first: 1) {{
        edges {{ node {{ {_FILE_FIELDS} }} }}
      }}
      under: files(pattern: $pattern, first: 1) {{ edges {{ node {{ name }} }} }}
    }}
  }}
}}"""


def like_escape(text: str) -> str:
    """Escape SQL LIKE wildcards so ``text`` matches only itself."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class NameLookup:
    """What one name is inside a run: a file, a folder (names exist under it), or neither."""

    run: Run
    file: RunFile | None
    is_folder: bool


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of what the client has sent and received since it was made."""

    graphql_requests: int = 0
    byte_requests: int = 0
    bytes_received: int = 0
    retries: int = 0
    in_flight: int = 0  # calls (GraphQL or byte reads) under way right now


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {"graphql_requests": 0, "byte_requests": 0, "bytes_received": 0, "retries": 0, "in_flight": 0}

    @contextlib.contextmanager
    def call(self):
        """Count one call as in flight while it runs."""
        self.add("in_flight")
        try:
            yield
        finally:
            self.add("in_flight", -1)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> ClientStats:
        with self._lock:
            return ClientStats(**self._values)


def _run_node(data: dict[str, Any], entity: str, project: str, run_id: str) -> dict[str, Any]:
    """``data.project.run`` of an answer; a null project or run is ``NotFound``."""
    project_node = data.get("project")
    if not isinstance(project_node, dict):
        raise NotFound(f"{entity}/{project}")
    run_node = project_node.get("run")
    if not isinstance(run_node, dict):
        raise NotFound(f"{entity}/{project}/{run_id}")
    return run_node


def _in_flight(method):
    """Count the calls of ``method`` under way in ``ClientStats.in_flight``."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._counters.call():
            return method(self, *args, **kwargs)

    return wrapper


class WandbClient:
    """Thread-safe client for the read path of the W&B API. See the module docstring.

    ``max_retries`` bounds urllib3 retries per request and body resumes per
    ``read_range``; sleeps grow as ``backoff_factor_seconds * 2**n`` plus
    jitter, never above ``backoff_max_seconds`` (``Retry-After`` included).
    ``operation_timeout_seconds`` caps one call (0: no cap).
    ``max_requests_per_second`` / ``max_byte_requests_per_second`` are the
    token-bucket rates for GraphQL and for byte requests (0: no limit),
    with bursts of ``request_burst`` / twice the byte rate.
    ``offline_cooldown_seconds``: how long calls to a host found unreachable
    fail at once before one is let through to probe it. ``offline``: never
    touch the network.
    ``session``: an existing ``requests.Session`` to use (proxies, CA bundle);
    the client mounts its retrying adapter on it for ``http://`` and
    ``https://`` and does not close it. Adapters mounted for longer prefixes
    keep precedence.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        page_size: int = 1000,
        connect_timeout_seconds: float = 10,
        read_timeout_seconds: float = 30,
        max_retries: int = 5,
        backoff_max_seconds: float = 60,
        backoff_factor_seconds: float = 1.0,
        operation_timeout_seconds: float = 30.0,
        max_requests_per_second: float = 0.0,
        request_burst: float = 20.0,
        max_byte_requests_per_second: float = 0.0,
        offline_cooldown_seconds: float = 5.0,
        offline: bool = False,
        session: requests.Session | None = None,
    ) -> None:
        base = base_url.strip().rstrip("/")
        if origin_of(base) is None or origin_of(base)[0] not in ("http", "https"):
            raise ValueError(f"W&B base URL must be an http:// or https:// URL with a host, got {base!r}")
        self.base_url = base
        self.host = host_of(base)
        self._graphql_url = f"{base}/graphql"
        self._auth = OriginAuth(base, api_key)
        self._timeout = (float(connect_timeout_seconds), float(read_timeout_seconds))
        self._page_size = max(1, min(MAX_PAGE_SIZE, int(page_size)))
        self._max_retries = max(0, int(max_retries))
        self._backoff_factor_seconds = max(0.0, float(backoff_factor_seconds))
        self._backoff_max_seconds = max(0.0, float(backoff_max_seconds))
        self._counters = _Counters()
        self._owns_session = session is None
        policy = RetryPolicy(self._max_retries, self._backoff_factor_seconds, self._backoff_max_seconds)
        self._session = build_session(policy, on_retry=lambda: self._counters.add("retries"), session=session)
        self._signed_urls: LRUCache = LRUCache(maxsize=SIGNED_URL_CACHE_SIZE)
        self._signed_lock = threading.Lock()
        self._operation_timeout_seconds = max(0.0, float(operation_timeout_seconds))
        self._graphql_bucket = limits.TokenBucket(max_requests_per_second, request_burst)
        byte_rate = max(0.0, float(max_byte_requests_per_second))
        self._byte_bucket = limits.TokenBucket(byte_rate, max(1.0, 2 * byte_rate))
        self._breaker = limits.CircuitBreaker(offline_cooldown_seconds)
        self.offline = bool(offline)
        # Fetches page n+1 of a listing while page n is being read (see _paginate).
        self._next_pages = ThreadPoolExecutor(max_workers=4, thread_name_prefix="wfs-next-page")

    def __repr__(self) -> str:
        return f"WandbClient(base_url={self.base_url!r})"

    def __enter__(self) -> WandbClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def unreachable(self) -> bool:
        """True in offline mode, and from a failed call to the API host until one gets an answer."""
        return self.offline or self._breaker.is_down(self.host)

    def stats(self) -> ClientStats:
        return self._counters.snapshot()

    def close(self) -> None:
        """Close the connection pool (only if the client made its own session)."""
        self._next_pages.shutdown(wait=True, cancel_futures=True)
        if self._owns_session:
            self._session.close()

    # ------------------------------------------------------------------ GraphQL

    @_in_flight
    def _graphql(self, query: str, variables: dict[str, Any], what: str) -> dict[str, Any]:
        """POST one GraphQL document; return ``data`` or raise a ``WandbError``."""
        with limits.call_scope(self._operation_timeout_seconds):
            response = self._send(
                "POST", self._graphql_url, self._graphql_bucket, what, "graphql_requests",
                json={"query": query, "variables": variables},
            )
        with response:
            status = response.status_code
            try:
                payload = response.json()
            except ValueError:
                payload = None
        if status == 401:
            raise AuthError(
                f"{self.host} rejected the API key (401) while fetching {what}; "
                f"run `wandb login --relogin --host {self.base_url}` or set WANDB_API_KEY"
            )
        if status == 403:
            raise AuthError(f"no access to {what} on {self.host} (403)")
        if status == 404:
            raise NotFound(f"{what} not found on {self.host} (404 from {self._graphql_url})")
        if status in _REDIRECT_STATUSES:
            target = host_of(response.headers.get("Location", "")) or "?"
            raise BadResponse(
                f"{self.host} redirected the GraphQL request for {what} to {target}; check the base URL"
            )
        mapped = status_error(status, what, self.host)
        if mapped is not None:
            raise mapped
        if isinstance(payload, dict) and payload.get("errors"):
            raise self._graphql_errors(payload["errors"], what)
        if status != 200:
            raise BadResponse(f"{self.host} answered {status} to the GraphQL request for {what}")
        if not isinstance(payload, dict):
            raise BadResponse(f"{self.host} sent a non-JSON GraphQL answer for {what}")
        data = payload.get("data")
        if not isinstance(data, dict):
            raise BadResponse(f"{self.host} sent a GraphQL answer without data for {what}")
        return data

    def _send(
        self, method: str, url: str, bucket: limits.TokenBucket, what: str, counter: str, **kwargs: Any
    ) -> requests.Response:
        """One HTTP request (urllib3 retries included) inside the current call's limits.

        Order: offline mode and the circuit breaker (fail at once), a token from
        ``bucket``, then the request with every attempt's timeout ending by the
        call's deadline. Connection trouble opens the breaker for the host;
        any answer closes it.
        """
        host = host_of(url)
        if self.offline:
            raise Unreachable(f"offline mode: not asking {host} for {what}")
        ctx = limits.current()
        assert ctx is not None, "_send outside a call scope"
        probe = self._breaker.check(host)
        reported = False
        try:
            try:
                ctx.bucket = bucket
                bucket.acquire(ctx.deadline)
            except limits.BudgetExceeded as exc:
                raise TransientError(f"{exc} for {what}") from None
            self._counters.add(counter)
            connect, read = self._timeout
            try:
                response = self._session.request(
                    method, url, auth=self._auth, timeout=limits.DeadlineTimeout(connect, read, ctx.deadline),
                    allow_redirects=False, **kwargs,
                )
            except requests.RequestException as exc:
                mapped = map_request_exception(exc, what, host)
                if ctx.deadline.expired() and isinstance(mapped, TransientError):
                    mapped = Unreachable(f"{host} gave no answer within {ctx.deadline.seconds:g}s for {what}")
                if isinstance(mapped, Unreachable):
                    self._breaker.failure(host, str(mapped))
                    reported = True
                raise mapped from None
            self._breaker.success(host)
            reported = True
            return response
        finally:
            if not reported:
                self._breaker.release(host, probe)

    def _graphql_errors(self, errors: Any, what: str) -> WandbError:
        messages: list[str] = []
        for entry in errors if isinstance(errors, list) else [errors]:
            if isinstance(entry, dict):
                messages.append(str(entry.get("message", entry)))
            else:
                messages.append(str(entry))
        text = "; ".join(messages)[:500]
        lowered = text.lower()
        if any(hint in lowered for hint in _NOT_FOUND_HINTS):
            return NotFound(f"{what} not found on {self.host}: {text}")
        if any(hint in lowered for hint in _DENIED_HINTS):
            return AuthError(f"no access to {what} on {self.host}: {text}")
        return BadResponse(f"GraphQL error from {self.host} for {what}: {text}")

    def _page(
        self,
        query: str,
        variables: dict[str, Any],
        connection_of: Callable[[dict[str, Any]], Any],
        what: str,
        after: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One GraphQL request: the nodes of one page and the cursor of the next (None at the end)."""
        data = self._graphql(query, {**variables, "first": self._page_size, "after": after}, what)
        connection = connection_of(data)
        if not isinstance(connection, dict):
            return [], None
        edges = [edge for edge in connection.get("edges") or [] if isinstance(edge, dict)]
        nodes = [edge["node"] for edge in edges if isinstance(edge.get("node"), dict)]
        page_info = connection.get("pageInfo") or {}
        if not page_info.get("hasNextPage"):
            return nodes, None
        if not edges:
            logger.warning("%s: page with hasNextPage=true but no edges for %s; stopping", self.host, what)
            return nodes, None
        cursor = next((e["cursor"] for e in reversed(edges) if e.get("cursor")), None) or page_info.get("endCursor")
        if not cursor or cursor == after:
            logger.warning("%s: cursor did not advance while listing %s; stopping", self.host, what)
            return nodes, None
        return nodes, cursor

    def _paginate(
        self,
        query: str,
        variables: dict[str, Any],
        connection_of: Callable[[dict[str, Any]], Any],
        what: str,
    ) -> Iterator[dict[str, Any]]:
        """Yield the nodes of a connection, one GraphQL request per page.

        The request for the next page leaves as soon as this one's cursor is
        known, so W&B builds it while the caller reads this one. Callers read
        to the end (an early stop wastes at most that one request).
        """
        seen: set[str] = set()
        page = self._page(query, variables, connection_of, what, None)
        while True:
            nodes, cursor = page
            upcoming: Future | None = None
            if cursor is not None and cursor not in seen:
                seen.add(cursor)
                upcoming = self._next_pages.submit(
                    contextvars.copy_context().run, self._page, query, variables, connection_of, what, cursor
                )
            elif cursor is not None:
                logger.warning("%s: cursor did not advance while listing %s; stopping", self.host, what)
            yield from nodes
            if upcoming is None:
                return
            page = upcoming.result()

    # ---------------------------------------------------------------- parsing

    def _time(self, value: Any, what: str) -> float | None:
        if value is None:
            return None
        try:
            return parse_wandb_time(str(value))
        except (ValueError, TypeError):
            logger.warning("%s: unparsable time %r in %s", self.host, value, what)
            return None

    @staticmethod
    def _name(node: dict[str, Any], what: str) -> str:
        name = node.get("name")
        if not isinstance(name, str) or not name:
            raise BadResponse(f"object without a name in {what}")
        return name

    def _project(self, node: dict[str, Any], entity: str, what: str) -> Project:
        return Project(
            entity=node.get("entityName") or entity,
            name=self._name(node, what),
            created_at=self._time(node.get("createdAt"), what),
        )

    def _run(self, node: dict[str, Any], entity: str, project: str, what: str) -> Run:
        return Run(
            entity=entity,
            project=project,
            run_id=self._name(node, what),
            display_name=node.get("displayName"),
            state=node.get("state"),
            created_at=self._time(node.get("createdAt"), what),
            heartbeat_at=self._time(node.get("heartbeatAt"), what),
            storage_id=node.get("id"),
        )

    def _file(self, node: dict[str, Any], entity: str, project: str, run_id: str, what: str) -> RunFile | None:
        """A ``RunFile``, or None for a placeholder (md5 ``"0"``)."""
        md5 = node.get("md5")
        if md5 == PLACEHOLDER_MD5:
            return None
        name = self._name(node, what)
        raw_size = node.get("sizeBytes")
        size: int | None = None
        if isinstance(raw_size, int) and not isinstance(raw_size, bool):
            size = raw_size
        elif isinstance(raw_size, str) and raw_size.strip().isdigit():
            size = int(raw_size.strip())
        elif isinstance(raw_size, float) and raw_size.is_integer():
            size = int(raw_size)
        if size is None or size < 0:
            raise BadResponse(f"file {name!r} in {what} has an invalid sizeBytes {raw_size!r}")
        return RunFile(
            entity=entity,
            project=project,
            run_id=run_id,
            name=name,
            size_bytes=size,
            updated_at=self._time(node.get("updatedAt"), what),
            md5=md5,
            url=node.get("url") or None,
            direct_url=node.get("directUrl") or None,
            mimetype=node.get("mimetype") or None,
            file_id=node.get("id"),
        )

    # ---------------------------------------------------------------- listing

    def viewer(self) -> Viewer:
        """Who the API key belongs to; ``AuthError`` naming the host if the key is rejected."""
        data = self._graphql(_Q_VIEWER, {}, f"the viewer on {self.host}")
        node = data.get("viewer")
        if not isinstance(node, dict):
            raise AuthError(
                f"{self.host} did not accept the API key (viewer is null); "
                f"run `wandb login --relogin --host {self.base_url}` or set WANDB_API_KEY"
            )
        teams: list[str] = []
        for edge in ((node.get("teams") or {}).get("edges") or []):
            team = (edge or {}).get("node") or {}
            if team.get("name"):
                teams.append(team["name"])
        entity = node.get("entity") or ""
        return Viewer(username=node.get("username") or entity, entity=entity, teams=tuple(teams))

    def entity_exists(self, entity: str) -> bool:
        try:
            data = self._graphql(_Q_ENTITY, {"name": entity}, f"entity {entity}")
        except NotFound:
            return False
        return isinstance(data.get("entity"), dict)

    def iter_projects(self, entity: str) -> Iterator[Project]:
        what = f"projects of {entity}"
        for node in self._paginate(_Q_PROJECTS, {"entity": entity}, lambda d: d.get("models"), what):
            yield self._project(node, entity, what)

    def project(self, entity: str, project: str) -> Project:
        what = f"{entity}/{project}"
        data = self._graphql(_Q_PROJECT, {"entity": entity, "project": project}, what)
        node = data.get("project")
        if not isinstance(node, dict):
            raise NotFound(what)
        return self._project(node, entity, what)

    def _runs_query(self, entity: str, project: str, order: str, display_name: str | None):
        what = f"{entity}/{project}"

        def connection(data: dict[str, Any]) -> Any:
            node = data.get("project")
            if not isinstance(node, dict):
                raise NotFound(what)
            return node.get("runs")

        filters = json.dumps({"displayName": display_name} if display_name is not None else {})
        variables = {"entity": entity, "project": project, "filters": filters, "order": order}
        return variables, connection, what

    def iter_runs(
        self, entity: str, project: str, order: str = "+created_at", display_name: str | None = None
    ) -> Iterator[Run]:
        """A project's runs, oldest first, lazily; only those called ``display_name`` if given."""
        variables, connection, what = self._runs_query(entity, project, order, display_name)
        for node in self._paginate(_Q_RUNS, variables, connection, f"runs of {what}"):
            yield self._run(node, entity, project, what)

    def runs_page(
        self, entity: str, project: str, after: str | None = None, order: str = "+created_at"
    ) -> tuple[list[Run], str | None]:
        """One page of a project's runs, oldest first, and the cursor of the next (None: last page)."""
        variables, connection, what = self._runs_query(entity, project, order, None)
        nodes, cursor = self._page(_Q_RUNS, variables, connection, f"runs of {what}", after)
        return [self._run(node, entity, project, what) for node in nodes], cursor

    def run(self, entity: str, project: str, run_id: str) -> Run:
        what = f"{entity}/{project}/{run_id}"
        data = self._graphql(_Q_RUN, {"entity": entity, "project": project, "run": run_id}, what)
        return self._run(_run_node(data, entity, project, run_id), entity, project, what)

    def _iter_files(self, entity: str, project: str, run_id: str, names: list[str]) -> Iterator[RunFile]:
        what = f"{entity}/{project}/{run_id}"

        def connection(data: dict[str, Any]) -> Any:
            return _run_node(data, entity, project, run_id).get("files")

        variables = {"entity": entity, "project": project, "run": run_id, "names": names}
        for node in self._paginate(_Q_RUN_FILES, variables, connection, f"files of {what}"):
            run_file = self._file(node, entity, project, run_id, what)
            if run_file is not None:
                yield run_file

    def iter_run_files(self, entity: str, project: str, run_id: str) -> Iterator[RunFile]:
        """Every file of a run (placeholders dropped), lazily, page by page."""
        return self._iter_files(entity, project, run_id, [])

    def files_by_name(self, entity: str, project: str, run_id: str, names: Sequence[str]) -> list[RunFile]:
        """Exact-name look-up; names that do not exist (or are placeholders) are simply absent."""
        wanted = list(dict.fromkeys(n for n in names if n))
        found: list[RunFile] = []
        for i in range(0, len(wanted), self._page_size):
            chunk = wanted[i : i + self._page_size]
            chunk_set = set(chunk)
            found.extend(f for f in self._iter_files(entity, project, run_id, chunk) if f.name in chunk_set)
        return found

    def lookup_name(self, entity: str, project: str, run_id: str, name: str) -> NameLookup:
        """One request: the run, the file called ``name`` (if any), and whether ``name/`` has files."""
        what = f"{entity}/{project}/{run_id}"
        variables = {
            "entity": entity,
            "project": project,
            "run": run_id,
            "names": [name],
            "pattern": like_escape(name) + "/%",
        }
        data = self._graphql(_Q_LOOKUP, variables, f"{what}/{name}")
        run_node = _run_node(data, entity, project, run_id)
        run = self._run(run_node, entity, project, what)
        found = None
        for edge in (run_node.get("exact") or {}).get("edges") or []:
            node = (edge or {}).get("node")
            if isinstance(node, dict) and node.get("name") == name:
                found = self._file(node, entity, project, run_id, what)
        under = [
            (edge or {}).get("node", {}).get("name", "")
            for edge in (run_node.get("under") or {}).get("edges") or []
        ]
        is_folder = any(isinstance(n, str) and n.startswith(name + "/") for n in under)
        return NameLookup(run=run, file=found, is_folder=is_folder)

    # ------------------------------------------------------------------ bytes

    def file_url(self, f: RunFile) -> str:
        """The API-host URL of a file: ``f.url`` or ``{base}/files/{entity}/{project}/{run_id}/{name}``."""
        if f.url:
            return f.url
        segments = [f.entity, f.project, f.run_id, *f.name.split("/")]
        return f"{self.base_url}/files/" + "/".join(quote(s, safe="") for s in segments)

    def _cached_signed_url(self, key: tuple[str, ...]) -> str | None:
        with self._signed_lock:
            return self._signed_urls.get(key)

    def _remember_signed_url(self, key: tuple[str, ...], url: str | None) -> None:
        with self._signed_lock:
            if url is None:
                self._signed_urls.pop(key, None)
            else:
                self._signed_urls[key] = url

    def _get(self, url: str, first: int, last: int, what: str) -> requests.Response:
        headers = {"Range": f"bytes={first}-{last}", "Accept-Encoding": "identity"}
        return self._send("GET", url, self._byte_bucket, what, "byte_requests", headers=headers, stream=True)

    def _read_body(self, response: requests.Response, view: memoryview, skip: int) -> tuple[int, Exception | None]:
        """Discard ``skip`` bytes, then fill ``view`` from the body.

        Returns how many bytes went into ``view`` and the exception that cut the
        body short (None when the body simply ended).
        """
        raw = response.raw
        filled = 0
        ctx = limits.current()
        try:
            while skip > 0:
                if ctx is not None and ctx.deadline.expired():
                    return 0, TimeoutError("call deadline passed")
                chunk = raw.read(min(READ_CHUNK_BYTES, skip), decode_content=False)
                if not chunk:
                    return 0, None
                self._counters.add("bytes_received", len(chunk))
                skip -= len(chunk)
            while filled < len(view):
                if ctx is not None and ctx.deadline.expired():
                    return filled, TimeoutError("call deadline passed")
                chunk = raw.read(min(READ_CHUNK_BYTES, len(view) - filled), decode_content=False)
                if not chunk:
                    break
                self._counters.add("bytes_received", len(chunk))
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            return filled, exc
        return filled, None

    @_in_flight
    def read_range(self, f: RunFile, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a run file: exactly ``end - start`` of them, or an error.

        Order of URLs: the cached signed URL, else ``f.direct_url``, else the
        API URL (whose redirect is followed by hand and cached). A 403 (or a
        400/401 from a storage host) on a signed URL is treated as expiry: the
        URL is refreshed once, through the API route's redirect (``file_url``),
        and when that route answers with an error, by looking the file up by
        its exact name for a fresh ``directUrl``. A body that ends
        early is resumed with a Range for the remainder, up to ``max_retries``
        times. The whole call ends within ``operation_timeout_seconds``.
        """
        if start < 0 or end < start:
            raise ValueError(f"bad byte range [{start}, {end})")
        count = end - start
        if count == 0:
            return b""
        with limits.call_scope(self._operation_timeout_seconds) as ctx:
            return self._read_range(f, start, end, ctx)

    def _read_range(self, f: RunFile, start: int, end: int, ctx: limits.CallContext) -> bytes:
        count = end - start
        key = (f.entity, f.project, f.run_id, f.name)
        what = f"{f.entity}/{f.project}/{f.run_id}/{f.name} [{start}, {end})"
        api_url = self.file_url(f)
        target = self._cached_signed_url(key) or f.direct_url or api_url
        refreshed = False  # a fresh URL was asked for (at most once per call)
        looked_up = False  # the exact-name look-up was used (at most once per call)
        hops = 0
        failures = 0
        buffer = bytearray(count)
        view = memoryview(buffer)
        filled = 0
        while filled < count:
            offset = start + filled
            response = self._get(target, offset, end - 1, what)
            host = host_of(target)
            try:
                status = response.status_code
                if status in _REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    hops += 1
                    if not location or hops > MAX_REDIRECTS:
                        raise BadResponse(f"{host} sent a bad or endless redirect for {what}")
                    target = urljoin(target, location)
                    self._remember_signed_url(key, target)
                    continue
                on_api = self._auth.applies_to(target)
                expired_like = status == 403 or (status in (400, 401) and not on_api)
                if expired_like and not on_api and not refreshed:
                    logger.info("%s answered %d for %s; asking W&B for a fresh URL", host, status, redact_url(target))
                    self._remember_signed_url(key, None)
                    refreshed, hops = True, 0
                    target = api_url  # its redirect is a fresh URL; if the route fails, a look-up
                    continue
                if on_api and status >= 400 and status not in (401, 403, 416) and not looked_up:
                    logger.info("%s answered %d on the file route for %s; looking the file up by name",
                                host, status, what)
                    refreshed, hops = True, 0
                    target, looked_up = self._fresh_direct_url(f, key, what), True
                    continue
                if status == 401:
                    raise AuthError(f"{host} rejected the API key (401) for {what}")
                if status == 403:
                    if on_api:
                        raise AuthError(f"no access to {what} on {host} (403)")
                    self._remember_signed_url(key, None)
                    raise UrlExpired(f"{host} refused a freshly signed URL (403) for {what}")
                if status == 404:
                    raise NotFound(f"{f.entity}/{f.project}/{f.run_id}/{f.name} (404 from {host})")
                if status == 416:
                    raise BadResponse(f"{host} says range [{offset}, {end}) is not satisfiable (416) for {what}")
                mapped = status_error(status, what, host)
                if mapped is not None:
                    raise mapped
                if status == 206:
                    want = self._check_content_range(response, offset, end, host, what)
                    got, cause = self._read_body(response, view[filled : filled + want], skip=0)
                elif status == 200:
                    self._check_full_length(response, end, host, what)
                    want = count - filled
                    got, cause = self._read_body(response, view[filled:], skip=offset)
                else:
                    raise BadResponse(f"{host} answered {status} to a range request for {what}")
            finally:
                self._finish(response)
            filled += got
            if got == want:
                continue
            # The body ended early or the connection broke: resume from ``filled``.
            if ctx.deadline.expired():
                raise Unreachable(f"{host} did not send {what} within {ctx.deadline.seconds:g}s")
            failures += 1
            reason = f"connection broke mid-body ({type(cause).__name__})" if cause else "body ended early"
            if failures > self._max_retries:
                if cause is not None:
                    raise Unreachable(f"{host}: {reason} for {what}; retries spent")
                raise BadResponse(f"{host}: {reason} for {what}; retries spent")
            self._counters.add("retries")
            logger.warning(
                "%s: %s for %s; resuming at byte %d (retry %d)",
                host, reason, redact_url(target), start + filled, failures,
            )
            if got == 0:
                self._backoff(failures, ctx, host, what)
        return bytes(buffer)

    def _fresh_direct_url(self, f: RunFile, key: tuple[str, ...], what: str) -> str:
        """A new signed URL for ``f`` from an exact-name look-up (``files_by_name``)."""
        found = [g for g in self.files_by_name(f.entity, f.project, f.run_id, [f.name]) if g.name == f.name]
        if not found:
            raise NotFound(f"{f.entity}/{f.project}/{f.run_id}/{f.name} (gone on {self.host})")
        fresh = found[0]
        if fresh.size_bytes != f.size_bytes or (f.md5 and fresh.md5 and fresh.md5 != f.md5):
            raise BadResponse(f"{what} changed on {self.host} while it was being read")
        if not fresh.direct_url:
            raise UrlExpired(f"{self.host} gave no fresh URL for {what}")
        self._remember_signed_url(key, fresh.direct_url)
        return fresh.direct_url

    def _backoff(self, attempt: int, ctx: limits.CallContext | None = None, host: str = "", what: str = "") -> None:
        delay = min(self._backoff_max_seconds, self._backoff_factor_seconds * (2 ** (attempt - 1)))
        if ctx is not None and delay >= ctx.deadline.remaining():
            raise Unreachable(f"{host} did not send {what} within {ctx.deadline.seconds:g}s")
        if delay > 0:
            time.sleep(delay)

    @staticmethod
    def _finish(response: requests.Response) -> None:
        """Give the connection back if the body was read to its end, else close it."""
        raw = response.raw
        try:
            if getattr(raw, "length_remaining", None) == 0:
                raw.release_conn()
        except Exception:  # pragma: no cover - best effort
            pass
        response.close()

    @staticmethod
    def _check_content_range(response: requests.Response, offset: int, end: int, host: str, what: str) -> int:
        """Validate a 206's ``Content-Range`` against ``[offset, end)``; return how many bytes it holds."""
        header = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE_RE.match(header)
        if not match:
            raise BadResponse(f"{host} sent 206 with a bad Content-Range {header!r} for {what}")
        first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
        if total != "*" and int(total) < end:
            raise BadResponse(f"{host} says the file has {total} bytes, fewer than asked for {what}")
        if first != offset or last < first or last > end - 1:
            raise BadResponse(
                f"{host} sent Content-Range {header.strip()!r} for asked bytes {offset}-{end - 1} ({what})"
            )
        return last - first + 1

    @staticmethod
    def _check_full_length(response: requests.Response, end: int, host: str, what: str) -> None:
        length = response.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) < end:
            raise BadResponse(f"{host} sent the whole file ({length} bytes), shorter than asked for {what}")
