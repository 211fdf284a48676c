"""An in-memory web for client unit tests: no sockets, but urllib3's retry loop still runs.

``FakeWeb.install(session)`` swaps the connection-pool classes of every
adapter mounted on the session for pools whose ``_make_request`` answers from
scripted routes instead of a socket. Everything above that (requests' auth
and header handling, urllib3's ``Retry`` with status/connection retries and
``Retry-After`` sleeps, streaming, ``Content-Length`` enforcement) is the real
code. Every request is recorded with its headers and timeout.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse


@dataclass
class Req:
    method: str
    url: str
    headers: CaseInsensitiveDict
    body: bytes
    timeout: Any

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Raise this instead of answering (e.g. a connection error before any response).
    error: Exception | None = None
    # Content-Length to announce; default len(body). Larger than the body = a cut connection.
    content_length: int | None = None


def gql(data: Any = None, errors: Any = None, status: int = 200) -> Reply:
    payload: dict[str, Any] = {"data": data}
    if errors is not None:
        payload["errors"] = errors
    return Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


Handler = Callable[[Req], Reply]


class FakeWeb:
    def __init__(self) -> None:
        self.requests: list[Req] = []
        self._routes: dict[tuple[str, str], list[Reply | Handler]] = {}
        self._lock = threading.Lock()

    def on(self, method: str, url: str, *replies: Reply | Handler) -> None:
        """Answer ``method url`` (full URL, or without its query).

        Replies (or callables ``Req -> Reply``) are used in order and the last
        one repeats.
        """
        self._routes[(method, url)] = list(replies)

    def to(self, url_prefix: str) -> list[Req]:
        return [r for r in self.requests if r.url.startswith(url_prefix)]

    def handle(self, req: Req) -> Reply:
        with self._lock:
            self.requests.append(req)
            route = self._routes.get((req.method, req.url)) or self._routes.get((req.method, req.path))
            if route is None:
                return Reply(599, f"no route for {req.method} {req.url}".encode())
            reply = route.pop(0) if len(route) > 1 else route[0]
            return reply(req) if callable(reply) else reply

    def install(self, session) -> None:
        web = self

        class Pool(_FakeMixin, HTTPConnectionPool):
            pass

        class HttpsPool(_FakeMixin, HTTPSConnectionPool):
            pass

        Pool.web = HttpsPool.web = web

        for adapter in session.adapters.values():
            manager = getattr(adapter, "poolmanager", None)
            if manager is not None:
                manager.clear()
                manager.pool_classes_by_scheme = {"http": Pool, "https": HttpsPool}


class _FakeMixin:
    web: FakeWeb

    def _validate_conn(self, conn) -> None:  # never connect
        return None

    def _make_request(self, conn, method, url, body=None, headers=None, retries=None, timeout=None,
                      chunked=False, response_conn=None, preload_content=True, decode_content=True,
                      enforce_content_length=True):
        default_port = 443 if self.scheme == "https" else 80
        netloc = self.host if self.port in (None, default_port) else f"{self.host}:{self.port}"
        if isinstance(body, str):
            body = body.encode()
        req = Req(method, f"{self.scheme}://{netloc}{url}", CaseInsensitiveDict(headers or {}),
                  body or b"", (timeout.connect_timeout, timeout.read_timeout) if timeout else None)
        reply = self.web.handle(req)
        if reply.error is not None:
            raise reply.error
        headers = dict(reply.headers)
        length = reply.content_length if reply.content_length is not None else len(reply.body)
        headers.setdefault("Content-Length", str(length))
        return HTTPResponse(
            body=io.BytesIO(reply.body),
            headers=headers,
            status=reply.status,
            preload_content=preload_content,
            decode_content=decode_content,
            request_method=method,
            request_url=url,
            retries=retries,
            enforce_content_length=enforce_content_length,
            connection=response_conn,
            pool=self,
        )
