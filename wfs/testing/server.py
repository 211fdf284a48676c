"""``WandbTestServer``: a W&B-compatible server for tests, the demo and benchmarks.

Two listeners: the API port (``/graphql``, ``/files/...`` redirects, the
``/_wfs/...`` control endpoints) and a storage port serving signed URLs, so
tests can check that credentials never travel to storage. Data lives in a
``Store`` (in memory; bodies may be generated on the fly or read from a
folder tree). Shares no code with ``wfs.client``.

Invariants:
- ``start()`` after ``stop()`` binds the same ports again; ``stop()`` also
  cuts open keep-alive connections, so a stopped server looks offline.
- Nothing is logged by default, and never an API key or a signed URL.

Run standalone: ``python -m wfs.testing.server --sample DIR --ready-file F``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
from typing import Any, Iterable

from wfs.testing.api_http import ApiHandler
from wfs.testing.content import Content, Generated
from wfs.testing.faults import Faults
from wfs.testing.graphql_api import GraphQLApi, RequestContext, file_url
from wfs.testing.httpbase import TrackingHTTPServer
from wfs.testing.stats import Stats
from wfs.testing.storage import StorageHandler, UrlSigner
from wfs.testing.store import FileRecord, RunRecord, Store

logger = logging.getLogger(__name__)

DEMO_USER = "demo-user"
DEMO_TEAM = "demo-team"
DEMO_API_KEY = "wfsdemo" + "0123456789abcdef" * 2 + "0"  # 40 chars, fixed and public
assert len(DEMO_API_KEY) == 40


class WandbTestServer:
    """In-process W&B-compatible server; also a context manager."""

    def __init__(
        self,
        api_keys: dict[str, str] | None = None,
        teams: dict[str, Iterable[str]] | None = None,
        page_cap: int = 1000,
        url_ttl_seconds: float = 3600,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        *,
        strict_auth: bool = True,
        missing_file_placeholders: bool = False,
        time_style: str = "plain",
        store: Store | None = None,
    ):
        self.api_keys: dict[str, str] = dict(api_keys or {DEMO_API_KEY: DEMO_USER})
        self.teams: dict[str, list[str]] = {u: list(t) for u, t in (teams or {}).items()}
        self.page_cap = page_cap
        self.host = host
        self.port = port
        self.storage_port = storage_port
        self.strict_auth = strict_auth
        self.missing_file_placeholders = missing_file_placeholders
        self.time_style = time_style  # "plain" | "z" | "micros": DateTime spelling
        self.store = store or Store()
        self.counters = Stats()
        self.faults = Faults()
        self.graphql = GraphQLApi()
        self.signer = UrlSigner(secrets.token_bytes(32), url_ttl_seconds)
        self._api: TrackingHTTPServer | None = None
        self._storage: TrackingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> "WandbTestServer":
        if self._api is not None:
            return self
        self._api = TrackingHTTPServer((self.host, self.port), ApiHandler, self)
        try:
            self._storage = TrackingHTTPServer((self.host, self.storage_port), StorageHandler, self)
        except OSError:
            self._api.server_close()
            self._api = None
            raise
        self.port = self._api.server_address[1]
        self.storage_port = self._storage.server_address[1]
        for srv, name in ((self._api, "api"), (self._storage, "storage")):
            t = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"wfs-test-{name}", daemon=True,
            )
            t.start()
            self._threads.append(t)
        logger.info("test server listening on %s (storage %s)", self.base_url, self.storage_url)
        return self

    def stop(self) -> None:
        for srv in (self._api, self._storage):
            if srv is not None:
                srv.shutdown()
                srv.close_all_connections()
                srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self._api = self._storage = None

    @property
    def running(self) -> bool:
        return self._api is not None

    def __enter__(self) -> "WandbTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- addresses -----------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def storage_url(self) -> str:
        return f"http://{self.host}:{self.storage_port}"

    @property
    def api_key(self) -> str:
        return next(iter(self.api_keys))

    @property
    def url_ttl_seconds(self) -> float:
        return self.signer.ttl_seconds

    @url_ttl_seconds.setter
    def url_ttl_seconds(self, value: float) -> None:
        self.signer.ttl_seconds = value

    def signed_url(self, object_key: str) -> str:
        return self.signer.sign(self.storage_url, object_key)

    def file_url(self, entity: str, project: str, run_id: str, name: str) -> str:
        return file_url(self.base_url, entity, project, run_id, name)

    def request_context(self, username: str | None) -> RequestContext:
        return RequestContext(
            store=self.store,
            username=username,
            teams_of=lambda user: self.teams.get(user, []),
            known_users=lambda: list(self.api_keys.values()),
            page_cap=self.page_cap,
            base_url=self.base_url,
            sign_url=self.signed_url,
            missing_file_placeholders=self.missing_file_placeholders,
            time_style=self.time_style,
        )

    # --- data ----------------------------------------------------------------
    def add_project(self, entity: str, project: str, **kwargs: Any):
        return self.store.add_project(entity, project, **kwargs)

    def add_run(
        self, entity: str, project: str, run_id: str, *,
        files: "dict[str, bytes | str | Generated | Content] | None" = None, **kwargs: Any,
    ) -> RunRecord:
        """Create/update a run (see ``Store.add_run``); ``files`` maps name -> content."""
        run = self.store.add_run(entity, project, run_id, **kwargs)
        for name, content in (files or {}).items():
            self.store.put_file(entity, project, run_id, name, content)
        return run

    def put_file(
        self, entity: str, project: str, run_id: str, name: str,
        content: "bytes | str | Generated | Content", **kwargs: Any,
    ) -> FileRecord:
        return self.store.put_file(entity, project, run_id, name, content, **kwargs)

    def file_info(self, entity: str, project: str, run_id: str, name: str) -> dict:
        """What the server holds for one file (KeyError when absent); md5 may be computed here."""
        rec = self.store.file(entity, project, run_id, name)
        if rec is None:
            raise KeyError(f"no file {entity}/{project}/{run_id}/{name!r}")
        return {
            "name": rec.name,
            "size_bytes": rec.size_bytes,
            "updated_at": rec.updated_at,
            "md5": rec.content.md5_b64(),
            "mimetype": rec.mimetype,
            "object_key": rec.object_key,
            "url": self.file_url(entity, project, run_id, name),
        }

    def delete_file(self, entity: str, project: str, run_id: str, name: str) -> None:
        self.store.delete_file(entity, project, run_id, name)

    def set_run_state(self, entity: str, project: str, run_id: str, state: str, **kwargs: Any) -> RunRecord:
        return self.store.set_run_state(entity, project, run_id, state, **kwargs)

    def load_tree(self, path: str) -> int:
        return self.store.load_tree(path)

    # --- counters and faults -------------------------------------------------
    def stats(self) -> dict:
        return self.counters.snapshot()

    def reset_stats(self) -> None:
        self.counters.reset()

    def set_faults(self, **kwargs: Any) -> None:
        """See ``Faults.set``: error_rate, rate_limit_rate, retry_after_seconds,
        truncate_rate, latency_seconds, error_count, rate_limit_count,
        targets (default all of graphql/files/storage), seed."""
        self.faults.set(**kwargs)

    def clear_faults(self) -> None:
        self.faults.set()


# --- CLI -----------------------------------------------------------------------
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m wfs.testing.server", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR", help="serve DIR/<entity>/<project>/<run_id>/...")
    src.add_argument("--sample", metavar="DIR", help="build the demo sample in DIR (if empty) and serve it")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="API port (0: any free port)")
    p.add_argument("--storage-port", type=int, default=0, help="storage port (0: any free port)")
    p.add_argument("--api-key", action="append", metavar="KEY[=USER]",
                   help="accepted key (repeatable); default: the fixed demo key for --user")
    p.add_argument("--user", default=DEMO_USER, help="username of keys given without =USER")
    p.add_argument("--team", action="append", metavar="TEAM", help=f"team of --user (default {DEMO_TEAM})")
    p.add_argument("--page-cap", type=int, default=1000, help="largest page the server returns")
    p.add_argument("--url-ttl", type=float, default=3600, help="signed URL lifetime, seconds")
    p.add_argument("--latency-ms", type=float, default=0, help="latency added to every request")
    p.add_argument("--ready-file", metavar="FILE", help="write {base_url, storage_url, pid} here once listening")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    keys: dict[str, str] = {}
    for item in args.api_key or [DEMO_API_KEY]:
        key, _, user = item.partition("=")
        keys[key] = user or args.user
    teams = {user: list(args.team or [DEMO_TEAM]) for user in set(keys.values())}
    server = WandbTestServer(
        api_keys=keys, teams=teams, page_cap=args.page_cap, url_ttl_seconds=args.url_ttl,
        host=args.host, port=args.port, storage_port=args.storage_port,
    )
    if args.sample:
        from wfs.testing.sample import build_sample

        if not os.path.isdir(args.sample) or not os.listdir(args.sample):
            build_sample(args.sample)
        server.load_tree(args.sample)
    elif args.data:
        server.load_tree(args.data)
    if args.latency_ms:
        server.set_faults(latency_seconds=args.latency_ms / 1000.0)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        if args.ready_file:
            tmp = f"{args.ready_file}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"base_url": server.base_url, "storage_url": server.storage_url,
                           "pid": os.getpid()}, fh)
            os.replace(tmp, args.ready_file)  # readers never see a half-written file
        print(f"wfs test server: {server.base_url} (storage {server.storage_url})", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if args.ready_file:
            try:
                os.unlink(args.ready_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
