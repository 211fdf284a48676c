"""Retries through urllib3's Retry: which statuses, how long to sleep, what is raised after."""

from __future__ import annotations

import pytest

from client_fakeweb import Reply, gql
from conftest import BASE
from wfs.client import BadResponse, RateLimited, RunFile, TransientError, Unreachable
from wfs.client.http import POOL_MAXSIZE

GRAPHQL = f"{BASE}/graphql"
SIGNED = "https://storage.test/o?sig=S"
PROJECT = gql({"project": {"id": "1", "name": "p", "entityName": "e", "createdAt": None}})


@pytest.fixture
def sleeps(monkeypatch):
    recorded: list[float] = []
    monkeypatch.setattr("urllib3.util.retry.time.sleep", recorded.append)
    return recorded


def storage_file():
    return RunFile(entity="e", project="p", run_id="r", name="o", size_bytes=4, url=None, direct_url=SIGNED)


def test_graphql_post_retried_on_500_and_502(web, client, sleeps):
    web.on("POST", GRAPHQL, Reply(500), Reply(502), PROJECT)
    assert client.project("e", "p").name == "p"
    assert len(web.requests) == 3
    stats = client.stats()
    assert (stats.graphql_requests, stats.retries) == (1, 2)


def test_retry_after_is_obeyed(web, make_client, sleeps):
    client = make_client(backoff_max_seconds=60)
    web.on("POST", GRAPHQL, Reply(429, b"", {"Retry-After": "7"}), PROJECT)
    client.project("e", "p")
    assert sleeps == [7]
    assert len(web.requests) == 2


def test_retry_after_is_capped_by_backoff_max(web, make_client, sleeps):
    client = make_client(backoff_max_seconds=2)
    web.on("POST", GRAPHQL, Reply(503, b"", {"Retry-After": "3600"}), PROJECT)
    client.project("e", "p")
    assert sleeps == [2]


def test_ratelimit_reset_is_honoured(web, make_client, sleeps):
    client = make_client(backoff_max_seconds=60)
    web.on("POST", GRAPHQL, Reply(429, b"", {"RateLimit-Reset": "4"}), PROJECT)
    client.project("e", "p")
    assert sleeps == [4]


def test_exponential_backoff_is_capped(web, make_client, sleeps):
    client = make_client(max_retries=6, backoff_factor_seconds=1.0, backoff_max_seconds=5)
    web.on("POST", GRAPHQL, Reply(500), Reply(500), Reply(500), Reply(500), Reply(500), PROJECT)
    client.project("e", "p")
    assert len(web.requests) == 6
    # urllib3 retries the first failure at once, then sleeps 2, 4, 8→5, 16→5 (+ jitter, capped).
    assert len(sleeps) == 4
    assert 2 <= sleeps[0] <= 3 and 4 <= sleeps[1] <= 5
    assert sleeps[2:] == [5, 5]


def test_429_forever_is_rate_limited(web, make_client, sleeps):
    client = make_client(max_retries=3)
    web.on("POST", GRAPHQL, Reply(429))
    with pytest.raises(RateLimited, match="api.test"):
        client.project("e", "p")
    assert len(web.requests) == 4


def test_5xx_forever_is_transient(web, make_client, sleeps):
    client = make_client(max_retries=2)
    web.on("GET", SIGNED, Reply(503))
    with pytest.raises(TransientError, match="storage.test") as exc:
        client.read_range(storage_file(), 0, 4)
    assert not isinstance(exc.value, RateLimited)
    assert len(web.requests) == 3


def test_501_is_not_retried(web, client, sleeps):
    web.on("POST", GRAPHQL, Reply(501), PROJECT)
    with pytest.raises(BadResponse, match="501"):
        client.project("e", "p")
    assert len(web.requests) == 1
    assert client.stats().retries == 0


def test_storage_get_retried_on_500(web, client, sleeps):
    web.on("GET", SIGNED, Reply(500), Reply(206, b"abcd", {"Content-Range": "bytes 0-3/4"}))
    assert client.read_range(storage_file(), 0, 4) == b"abcd"
    assert [r.headers["Range"] for r in web.requests] == ["bytes=0-3", "bytes=0-3"]
    assert "Authorization" not in web.requests[1].headers


def test_graphql_connection_refused_is_unreachable(web, make_client, sleeps):
    import urllib3.exceptions

    client = make_client(max_retries=1)
    web.on("POST", GRAPHQL, lambda req: Reply(error=urllib3.exceptions.NewConnectionError(None, "refused")))
    with pytest.raises(Unreachable, match="api.test"):
        client.viewer()
    assert len(web.requests) == 2


def test_pool_is_big_enough_for_parallel_readers(client):
    adapter = client._session.get_adapter(SIGNED)
    assert adapter._pool_maxsize == POOL_MAXSIZE >= 16
    retry = adapter.max_retries
    assert retry.respect_retry_after_header and "POST" in retry.allowed_methods
    assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
