"""GraphQL execution for the test server: the SDL schema plus resolvers.

Invariants:
- The schema is ``schema.graphql`` (a mirror of the shared W&B subset), so a
  query the real service would reject for an unknown field fails here too.
- Cursors are opaque (base64 of the last item's sort key) and stable under
  inserts: the next page starts strictly after that key in the current order.
- ``first`` is capped at ``page_cap``; ``before``/``last`` are accepted and
  ignored (the SDK never sends them).
- Resolvers read ``Store`` snapshots only; nothing here mutates data.
"""

from __future__ import annotations

import base64
import bisect
import binascii
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

from graphql import (
    GraphQLError,
    build_schema,
    default_field_resolver,
    execute,
    parse,
    validate,
)
from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode, OperationDefinitionNode

from wfs.testing.store import FileRecord, ProjectRecord, RunRecord, Store

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "schema.graphql")


def load_schema():
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return build_schema(fh.read())


@dataclass
class RequestContext:
    """What resolvers may see of one request."""

    store: Store
    username: str | None  # None: no valid key
    teams_of: Callable[[str], list[str]]
    known_users: Callable[[], list[str]]
    page_cap: int
    base_url: str
    sign_url: Callable[[str], str]  # object key -> signed storage URL
    missing_file_placeholders: bool = False
    time_style: str = "plain"  # see wandb_time


# --- small helpers ---------------------------------------------------------
def wandb_time(ts: float | None, style: str = "plain") -> str | None:
    """A W&B DateTime, always UTC. ``plain``: ``2023-11-05T17:46:35`` (what W&B
    usually sends); ``z``: with a ``Z``; ``micros``: ``.123456Z`` fractions."""
    if ts is None:
        return None
    moment = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    if style == "micros":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if style == "z" else "")


def _time(info, ts: float | None) -> str | None:
    return wandb_time(ts, info.context.time_style)


def _gid(*parts: Any) -> str:
    return base64.b64encode(":".join(str(p) for p in parts).encode()).decode()


def file_url(base_url: str, entity: str, project: str, run_id: str, name: str) -> str:
    """``{base}/files/<entity>/<project>/<run_id>/<name>``, each segment percent-encoded.

    Dot-only segments are encoded too (``%2E%2E``), so HTTP clients that
    normalise ``..`` in paths cannot change which file is asked for.
    """
    return f"{base_url}/files/" + "/".join(
        _quote_segment(s) for s in [entity, project, run_id, *name.split("/")]
    )


def _quote_segment(segment: str) -> str:
    if segment and set(segment) == {"."}:
        return "%2E" * len(segment)
    return quote(segment, safe="", errors="surrogatepass")


def encode_cursor(kind: str, key: tuple) -> str:
    raw = json.dumps([kind, list(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(kind: str, cursor: str) -> tuple:
    try:
        got_kind, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error, TypeError):
        raise GraphQLError(f"invalid cursor {cursor!r}") from None
    if got_kind != kind or not isinstance(key, list):
        raise GraphQLError(f"invalid cursor {cursor!r}")
    return tuple(key)


def paginate(ctx: RequestContext, kind: str, items: list, sort_key, first, after) -> dict:
    """A Relay connection over ``items`` (already sorted by ``sort_key``)."""
    keys = [sort_key(item) for item in items]
    start = bisect.bisect_right(keys, decode_cursor(kind, after)) if after else 0
    if first is not None and first < 0:
        raise GraphQLError("first must be >= 0")
    size = ctx.page_cap if first is None else min(first, ctx.page_cap)
    page = list(zip(items[start : start + size], keys[start : start + size]))
    edges = [{"node": item, "cursor": encode_cursor(kind, key)} for item, key in page]
    return {
        "edges": edges,
        "totalCount": len(items),
        "pageInfo": {
            "hasNextPage": start + len(page) < len(items),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else after,
        },
    }


def like_to_regex(pattern: str) -> re.Pattern:
    """SQL LIKE (``%`` any run, ``_`` one char, ``\\`` escapes); case-sensitive."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


# --- run filters (Mongo-style JSON string) ---------------------------------
_RUN_FILTER_FIELDS = {
    "state": lambda r: r.state,
    "name": lambda r: r.run_id,
    "displayName": lambda r: r.display_name,
    "display_name": lambda r: r.display_name,
}


def _match_value(actual: Any, cond: Any) -> bool:
    if isinstance(cond, dict):
        ok = True
        for op, arg in cond.items():
            if op == "$in":
                ok &= actual in (arg or [])
            elif op == "$nin":
                ok &= actual not in (arg or [])
            elif op == "$ne":
                ok &= actual != arg
            elif op == "$eq":
                ok &= actual == arg
            # unknown operators are ignored
        return ok
    return actual == cond


def run_matches(run: RunRecord, flt: Any) -> bool:
    """Support equality/$in/$nin/$ne on a few fields, $and/$or; ignore the rest."""
    if not isinstance(flt, dict):
        return True
    for key, cond in flt.items():
        if key == "$and" and isinstance(cond, list):
            if not all(run_matches(run, c) for c in cond):
                return False
        elif key == "$or" and isinstance(cond, list):
            if cond and not any(run_matches(run, c) for c in cond):
                return False
        elif key in _RUN_FILTER_FIELDS:
            if not _match_value(_RUN_FILTER_FIELDS[key](run), cond):
                return False
    return True


def _parse_filters(filters: str | None) -> Any:
    if not filters:
        return {}
    try:
        return json.loads(filters)
    except ValueError:
        raise GraphQLError(f"invalid filters: {filters!r}") from None


_RUN_ORDERS = {
    "created_at": lambda r: (r.created_at, r.run_id),
    "createdAt": lambda r: (r.created_at, r.run_id),
    "heartbeat_at": lambda r: (r.heartbeat_at, r.run_id),
    "name": lambda r: (r.run_id,),
    "display_name": lambda r: (r.display_name, r.run_id),
    "displayName": lambda r: (r.display_name, r.run_id),
}


def _run_sort_key(order: str | None):
    """``[+-]field``; unknown fields fall back to W&B's default ``-created_at``."""
    order = (order or "-created_at").strip()
    desc = order.startswith("-")
    base = _RUN_ORDERS.get(order.lstrip("+-"), _RUN_ORDERS["created_at"])
    if not desc:
        return base
    # Descending: negate numbers, invert strings code point by code point.
    return lambda r: tuple(_invert(v) for v in base(r))


def _invert(value: Any) -> Any:
    if isinstance(value, (int, float)):
        return -value
    return [-ord(c) for c in str(value)] + [1]  # [1] makes a prefix sort after


# --- object views ------------------------------------------------------------
def user_view(ctx: RequestContext, username: str) -> dict:
    return {
        "id": _gid("User", username),
        "name": username,
        "username": username,
        "email": f"{username}@example.invalid",
        "admin": False,
        "flags": "{}",
        "entity": username,
        "deletedAt": None,
        "photoUrl": None,
        "apiKeys": {"edges": []},
        "teams": {"edges": [{"node": entity_view(ctx, t)} for t in ctx.teams_of(username)]},
    }


def entity_view(ctx: RequestContext, name: str) -> dict:
    is_team = name not in ctx.known_users() and any(
        name in ctx.teams_of(u) for u in ctx.known_users()
    )
    return {"id": _gid("Entity", name), "name": name, "isTeam": is_team, "photoUrl": None, "readOnly": False}


def _owner(ctx: RequestContext, entity: str) -> dict:
    return user_view(ctx, entity)


# --- resolvers ---------------------------------------------------------------
def _q_viewer(_src, info):
    ctx: RequestContext = info.context
    return user_view(ctx, ctx.username) if ctx.username else None


def _q_project(_src, info, name=None, entityName=None):
    ctx: RequestContext = info.context
    entity = entityName or ctx.username
    if not name or not entity:
        return None
    return ctx.store.project(entity, name)


def _q_models(_src, info, entityName=None, first=None, after=None, **_ignored):
    ctx: RequestContext = info.context
    entity = entityName or ctx.username
    projects = ctx.store.projects(entity) if entity else []
    return paginate(ctx, "project", projects, lambda p: (p.name,), first, after)


def _q_entity(_src, info, name=None):
    ctx: RequestContext = info.context
    known = set(ctx.known_users()) | ctx.store.entities()
    for user in ctx.known_users():
        known.update(ctx.teams_of(user))
    return entity_view(ctx, name) if name in known else None


def _q_server_info(_src, info):
    return {"cliVersionInfo": {}, "latestLocalVersionInfo": None, "features": []}


def _p_runs(project: ProjectRecord, info, filters=None, order=None, first=None, after=None, **_):
    ctx: RequestContext = info.context
    flt = _parse_filters(filters)
    runs = [r for r in ctx.store.runs(project.entity, project.name) if run_matches(r, flt)]
    key = _run_sort_key(order)
    runs.sort(key=key)
    return paginate(ctx, "run", runs, key, first, after)


def _p_run_count(project: ProjectRecord, info, filters=None):
    flt = _parse_filters(filters)
    return sum(run_matches(r, flt) for r in info.context.store.runs(project.entity, project.name))


def _p_run(project: ProjectRecord, info, name):
    return info.context.store.run(project.entity, project.name, name)


def _r_files(run: RunRecord, info, names=None, pattern=None, first=None, after=None, **_):
    ctx: RequestContext = info.context
    files = ctx.store.files(run.entity, run.project, run.run_id)
    if names:
        wanted = sorted(set(names))
        chosen = [files[n] for n in wanted if n in files]
        if ctx.missing_file_placeholders:
            chosen = sorted(
                chosen + [_placeholder(run, n) for n in wanted if n not in files],
                key=lambda f: f.name,
            )
    elif pattern is not None:
        regex = like_to_regex(pattern)
        chosen = [f for n, f in sorted(files.items()) if regex.fullmatch(n)]
    else:
        chosen = [f for _, f in sorted(files.items())]
    return paginate(ctx, "file", chosen, lambda f: (f.name,), first, after)


class _Placeholder:
    """W&B's answer for a named file that does not exist: md5 "0", size 0."""

    def __init__(self, run: RunRecord, name: str):
        self.entity, self.project, self.run_id, self.name = run.entity, run.project, run.run_id, name
        self.size_bytes, self.updated_at, self.mimetype = 0, None, None
        self.file_id = _gid("File", run.storage_id, name)
        self.object_key = None
        self.content = None


def _placeholder(run: RunRecord, name: str) -> Any:
    return _Placeholder(run, name)


def _file_direct_url(f: FileRecord, info) -> str:
    ctx: RequestContext = info.context
    if f.object_key is None:
        return file_url(ctx.base_url, f.entity, f.project, f.run_id, f.name)
    return ctx.sign_url(f.object_key)


def _file_md5(f: FileRecord, info) -> str | None:
    if f.content is None:
        return "0"
    return f.content.md5_b64()


RESOLVERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("Query", "viewer"): _q_viewer,
    ("Query", "project"): _q_project,
    ("Query", "models"): _q_models,
    ("Query", "entity"): _q_entity,
    ("Query", "serverInfo"): _q_server_info,
    ("Query", "artifact"): lambda src, info, **_: None,
    # Project
    ("Project", "id"): lambda p, info: _gid("Project", p.internal_id),
    ("Project", "internalId"): lambda p, info: _gid("Project", p.internal_id),
    ("Project", "name"): lambda p, info: p.name,
    ("Project", "entityName"): lambda p, info: p.entity,
    ("Project", "entity"): lambda p, info: entity_view(info.context, p.entity),
    ("Project", "description"): lambda p, info: None,
    ("Project", "access"): lambda p, info: "PRIVATE",
    ("Project", "views"): lambda p, info: "{}",
    ("Project", "createdAt"): lambda p, info: _time(info, p.created_at),
    ("Project", "updatedAt"): lambda p, info: _time(info, p.created_at),
    ("Project", "isBenchmark"): lambda p, info: False,
    ("Project", "readOnly"): lambda p, info: False,
    ("Project", "user"): lambda p, info: _owner(info.context, p.entity),
    ("Project", "runCount"): _p_run_count,
    ("Project", "run"): _p_run,
    ("Project", "runs"): _p_runs,
    ("Project", "artifactCollection"): lambda p, info, **_: None,
    # Run
    ("Run", "id"): lambda r, info: _gid("Run", "v1", r.run_id, r.project, r.entity),
    ("Run", "name"): lambda r, info: r.run_id,
    ("Run", "displayName"): lambda r, info: r.display_name,
    ("Run", "projectId"): lambda r, info: info.context.store.project(r.entity, r.project).internal_id,
    ("Run", "tags"): lambda r, info: list(r.tags),
    ("Run", "sweepName"): lambda r, info: None,
    ("Run", "state"): lambda r, info: r.state,
    ("Run", "config"): lambda r, info: json.dumps(r.config),
    ("Run", "group"): lambda r, info: None,
    ("Run", "jobType"): lambda r, info: None,
    ("Run", "commit"): lambda r, info: None,
    ("Run", "readOnly"): lambda r, info: False,
    ("Run", "createdAt"): lambda r, info: _time(info, r.created_at),
    ("Run", "updatedAt"): lambda r, info: _time(info, r.updated_at),
    ("Run", "heartbeatAt"): lambda r, info: _time(info, r.heartbeat_at),
    ("Run", "description"): lambda r, info: None,
    ("Run", "notes"): lambda r, info: None,
    ("Run", "systemMetrics"): lambda r, info: "{}",
    ("Run", "summaryMetrics"): lambda r, info: json.dumps(r.summary),
    ("Run", "historyLineCount"): lambda r, info: 0,
    ("Run", "historyKeys"): lambda r, info, **_: {"keys": {}, "lastStep": -1},
    ("Run", "user"): lambda r, info: _owner(info.context, r.entity),
    ("Run", "fileCount"): lambda r, info: len(info.context.store.files(r.entity, r.project, r.run_id)),
    ("Run", "files"): _r_files,
    # File
    ("File", "id"): lambda f, info: f.file_id,
    ("File", "name"): lambda f, info: f.name,
    ("File", "displayName"): lambda f, info: f.name.rsplit("/", 1)[-1],
    ("File", "url"): lambda f, info, upload=None: file_url(
        info.context.base_url, f.entity, f.project, f.run_id, f.name
    ),
    ("File", "directUrl"): _file_direct_url,
    ("File", "sizeBytes"): lambda f, info: f.size_bytes,
    ("File", "storagePath"): lambda f, info: f.object_key,
    ("File", "mimetype"): lambda f, info: f.mimetype,
    ("File", "updatedAt"): lambda f, info: _time(info, f.updated_at),
    ("File", "digest"): _file_md5,
    ("File", "md5"): _file_md5,
}


def field_resolver(source, info, **args):
    fn = RESOLVERS.get((info.parent_type.name, info.field_name))
    if fn is not None:
        return fn(source, info, **args)
    return default_field_resolver(source, info, **args)


def root_field_names(document, operation_name: str | None) -> list[str]:
    """Names of the top-level fields of the operation (fragments expanded)."""
    fragments = {d.name.value: d for d in document.definitions if d.kind == "fragment_definition"}
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        ops = [d for d in ops if d.name and d.name.value == operation_name]
    if len(ops) != 1:
        return []
    names: list[str] = []

    def walk(selection_set, seen: frozenset):
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                names.append(sel.name.value)
            elif isinstance(sel, InlineFragmentNode):
                walk(sel.selection_set, seen)
            elif isinstance(sel, FragmentSpreadNode):
                frag = fragments.get(sel.name.value)
                if frag is not None and sel.name.value not in seen:
                    walk(frag.selection_set, seen | {sel.name.value})

    walk(ops[0].selection_set, frozenset())
    return names


def operation_label(document, operation_name: str | None) -> str:
    """The operation's name (``RunFiles``), or ``anonymous``: what the stats count per request."""
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        return operation_name
    if len(ops) == 1 and ops[0].name:
        return ops[0].name.value
    return "anonymous"


class GraphQLApi:
    """Parses, validates and executes one request body against the schema."""

    def __init__(self) -> None:
        self.schema = load_schema()

    def run(self, body: dict, ctx: RequestContext) -> tuple[dict, list[str], str | None]:
        """Returns (response JSON, root field names, operation name) for the stats."""
        query = body.get("query")
        variables = body.get("variables") or None
        operation_name = body.get("operationName") or None
        try:
            document = parse(query)
        except GraphQLError as err:
            return {"errors": [err.formatted]}, [], None
        errors = validate(self.schema, document)
        if errors:
            return {"errors": [e.formatted for e in errors]}, [], None
        roots = root_field_names(document, operation_name)
        result = execute(
            self.schema,
            document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=ctx,
            field_resolver=field_resolver,
        )
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            out["errors"] = [e.formatted for e in result.errors]
        return out, roots, operation_label(document, operation_name)
