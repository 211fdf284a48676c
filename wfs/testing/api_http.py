"""The API port of the test server: ``/graphql``, ``/files/...`` and ``/_wfs/...``.

Invariants:
- ``/graphql`` and ``/files/`` need HTTP Basic ``api:<key>`` with a configured
  key, else 401 (unless the server runs with ``strict_auth=False``, in which
  case GraphQL executes with no viewer). The key is never logged.
- ``/files/<entity>/<project>/<run_id>/<name>`` (segments percent-encoded)
  answers 302 to a freshly signed storage URL; it never serves bytes itself.
- GraphQL answers 200 with an ``errors`` list for invalid queries (as GraphQL
  servers do), 400 only for a body that is not a JSON object with a query.
- ``/sdk/otel/*`` (wandb-core's own telemetry) is accepted, dropped, uncounted.
- ``/_wfs/*`` control endpoints are unauthenticated, never counted in the
  stats and never subject to faults: they are for tests, bench and demo.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from urllib.parse import unquote, urlsplit

from wfs.testing.content import Generated
from wfs.testing.httpbase import QuietHandler

logger = logging.getLogger(__name__)


class ApiHandler(QuietHandler):
    _counted = True

    def count_status(self, code: int) -> None:
        if self._counted:
            self.server.app.counters.add_to("status_counts", code)

    # --- routing -----------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        self._counted = not path.startswith("/_wfs/")
        if path == "/graphql":
            body = self.read_body() if method == "POST" else b""
            if method != "POST":
                self.send_json(405, {"errors": [{"message": "use POST"}]}, {"Allow": "POST"})
                return
            self._graphql(body)
        elif path.startswith("/files/"):
            if method == "POST":
                self.read_body()
            self._file_redirect(path)
        elif path.startswith("/_wfs/"):
            self._control(method, path)
        elif path.startswith("/sdk/otel/"):
            # wandb-core exports its own OpenTelemetry metrics here: accept and drop,
            # uncounted, so SDK telemetry never shows up in the stats tests read.
            self._counted = False
            if method == "POST":
                self.read_body()
            self.send_body(200, b"", "application/x-protobuf")
        else:
            if method == "POST":
                self.read_body()
            self.send_json(404, {"error": "not found"})

    # --- auth and faults ---------------------------------------------------
    def _username(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _user, _, key = base64.b64decode(token.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return self.server.app.api_keys.get(key)

    def _unauthorized(self) -> None:
        self.send_json(
            401,
            {"errors": [{"message": "user is not logged in"}]},
            {"WWW-Authenticate": 'Basic realm="wandb"'},
        )

    def _apply_faults(self, target: str) -> bool:
        """Sleep / answer an injected error; True when the request is done."""
        decision = self.server.app.faults.decide(target)
        if decision.latency_seconds:
            time.sleep(decision.latency_seconds)
        if decision.status is None:
            return False
        if decision.status == 429:
            secs = str(max(0, int(round(decision.retry_after_seconds))))
            self.send_json(
                429,
                {"errors": [{"message": "rate limit exceeded"}]},
                {"Retry-After": secs, "RateLimit-Reset": secs},
            )
        else:
            self.send_json(decision.status, {"errors": [{"message": "internal server error"}]})
        return True

    # --- /graphql ------------------------------------------------------------
    def _graphql(self, raw: bytes) -> None:
        app = self.server.app
        app.counters.add("graphql_requests")
        if self._apply_faults("graphql"):
            return
        username = self._username()
        if username is None and app.strict_auth:
            self._unauthorized()
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            self.send_json(400, {"errors": [{"message": "body must be JSON with a query string"}]})
            return
        if body.get("variables") is not None and not isinstance(body.get("variables"), dict):
            self.send_json(400, {"errors": [{"message": "variables must be an object"}]})
            return
        result, roots, operation = app.graphql.run(body, app.request_context(username))
        for name in roots:
            app.counters.add_to("graphql_ops", name)
        if operation:
            app.counters.add_to("graphql_operations", operation)
        self.send_json(200, result)

    # --- /files/... ----------------------------------------------------------
    def _file_redirect(self, path: str) -> None:
        app = self.server.app
        app.counters.add("file_url_requests")
        if self._apply_faults("files"):
            return
        if self._username() is None:
            self._unauthorized()
            return
        parts = path[len("/files/") :].split("/")
        rec = None
        if len(parts) >= 4:
            try:
                entity, project, run_id, *name_parts = [
                    unquote(p, errors="strict") for p in parts
                ]
            except UnicodeDecodeError:
                name_parts = None
            if name_parts is not None:
                rec = app.store.file(entity, project, run_id, "/".join(name_parts))
        if rec is None:
            self.send_json(404, {"error": "file not found"})
            return
        location = app.signed_url(rec.object_key)
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # --- /_wfs/* control -----------------------------------------------------
    def _control(self, method: str, path: str) -> None:
        app = self.server.app
        body: dict = {}
        if method == "POST":
            raw = self.read_body()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                self.send_json(400, {"error": "body must be JSON"})
                return
        action = path[len("/_wfs/") :]
        try:
            if method in ("GET", "HEAD") and action == "stats":
                self.send_json(200, app.stats())
            elif method in ("GET", "HEAD") and action == "health":
                self.send_json(200, {"ok": True})
            elif method == "POST" and action == "reset":
                app.reset_stats()
                self.send_json(200, {"ok": True})
            elif method == "POST" and action == "faults":
                app.set_faults(**body)
                self.send_json(200, {"ok": True, "faults": app.faults.describe()})
            elif method == "POST" and action == "put_file":
                self.send_json(200, {"ok": True, "file": self._put_file(body)})
            elif method == "POST" and action == "run_state":
                app.store.set_run_state(
                    body["entity"], body["project"], body["run_id"], body["state"],
                    heartbeat_at=body.get("heartbeat_at"),
                )
                self.send_json(200, {"ok": True})
            elif method == "POST" and action == "add_run":
                app.store.add_run(
                    body.pop("entity"), body.pop("project"), body.pop("run_id"), **body
                )
                self.send_json(200, {"ok": True})
            else:
                self.send_json(404, {"error": f"no control action {method} {action}"})
        except (KeyError, TypeError, ValueError) as exc:
            self.send_json(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _put_file(self, body: dict) -> dict:
        if "content_b64" in body:
            content = base64.b64decode(body["content_b64"])
        elif "generated" in body:
            spec = body["generated"]
            content = Generated(int(spec["size"]), int(spec.get("seed", 0)), bool(spec.get("md5", True)))
        else:
            raise ValueError("put_file needs content_b64 or generated")
        rec = self.server.app.store.put_file(
            body["entity"], body["project"], body["run_id"], body["name"], content,
            updated_at=body.get("updated_at"), mimetype=body.get("mimetype"),
        )
        return {"name": rec.name, "size_bytes": rec.size_bytes, "updated_at": rec.updated_at}
