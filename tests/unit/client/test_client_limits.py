"""Deadlines, the request budget (token bucket), the circuit breaker, offline mode, URL refresh by name."""

from __future__ import annotations

import time

import pytest
import urllib3.exceptions

from client_fakeweb import Reply, gql
from conftest import BASE
from wfs.client import RunFile, TransientError, Unreachable
from wfs.client.limits import BudgetExceeded, CircuitBreaker, Deadline, TokenBucket, call_scope, current

GRAPHQL = f"{BASE}/graphql"
API_URL = f"{BASE}/files/e/p/r/d.bin"
SIGNED = "https://storage.test/o?sig=OLD"
FRESH = "https://storage.test/o?sig=NEW"
DATA = bytes(range(256)) * 4
PROJECT = gql({"project": {"id": "1", "name": "p", "entityName": "e", "createdAt": None}})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def refused(_req):
    return Reply(error=urllib3.exceptions.NewConnectionError(None, "refused"))


def storage(data=DATA):
    def handler(req):
        first, last = (int(x) for x in req.headers["Range"].removeprefix("bytes=").split("-"))
        return Reply(206, data[first:last + 1], {"Content-Range": f"bytes {first}-{last}/{len(data)}"})

    return handler


def files_answer(direct_url, size=len(DATA)):
    node = {"id": "1", "name": "d.bin", "url": API_URL, "directUrl": direct_url, "sizeBytes": size,
            "mimetype": None, "updatedAt": None, "md5": None}
    return gql({"project": {"run": {"files": {"edges": [{"node": node, "cursor": "c"}],
                                              "pageInfo": {"endCursor": "c", "hasNextPage": False}}}}})


# ------------------------------------------------------------------ token bucket
def test_bucket_allows_a_burst_then_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(2.0, burst=3, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(5)]
    assert waits[:3] == [0, 0, 0]
    assert waits[3] == pytest.approx(0.5) and waits[4] == pytest.approx(0.5)
    clock.now += 10  # idle time refills only up to the burst
    assert [bucket.acquire() for _ in range(3)] == [0, 0, 0]
    assert bucket.acquire() == pytest.approx(0.5)


def test_bucket_refuses_a_wait_past_the_deadline_and_takes_nothing():
    clock = FakeClock()
    bucket = TokenBucket(1.0, burst=1, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    with pytest.raises(BudgetExceeded):
        bucket.acquire(Deadline(0.5, clock))
    assert clock.slept == []
    assert bucket.acquire(Deadline(5, clock)) == pytest.approx(1.0)  # the refused call left its token


def test_bucket_rate_zero_is_unlimited():
    bucket = TokenBucket(0, burst=1, sleep=lambda s: pytest.fail("slept"))
    assert all(bucket.acquire() == 0 for _ in range(1000))


# ------------------------------------------------------------------ deadline
def test_deadline_counts_down_and_nested_scopes_share_it():
    clock = FakeClock()
    deadline = Deadline(3, clock)
    clock.now += 1
    assert deadline.remaining() == pytest.approx(2) and not deadline.expired()
    clock.now += 5
    assert deadline.remaining() == 0 and deadline.expired()
    assert Deadline(0).remaining() == float("inf")
    with call_scope(5) as outer:
        with call_scope(60) as inner:
            assert inner is outer and current() is outer
    assert current() is None


def test_client_call_is_cut_at_its_deadline_whatever_the_retry_budget(web, make_client):
    client = make_client(max_retries=50, backoff_factor_seconds=0.2, backoff_max_seconds=0.2,
                         operation_timeout_seconds=0.6)
    web.on("POST", GRAPHQL, Reply(503))
    started = time.monotonic()
    with pytest.raises(TransientError):
        client.project("e", "p")
    assert time.monotonic() - started < 1.0
    assert 2 <= len(web.requests) <= 5


def test_retry_after_longer_than_the_deadline_gives_up_at_once(web, make_client):
    client = make_client(backoff_max_seconds=60, operation_timeout_seconds=2)
    web.on("POST", GRAPHQL, Reply(429, b"", {"Retry-After": "30"}), PROJECT)
    started = time.monotonic()
    with pytest.raises(TransientError, match="429"):
        client.project("e", "p")
    assert time.monotonic() - started < 1.0 and len(web.requests) == 1


def test_every_attempt_timeout_ends_by_the_deadline(web, make_client):
    client = make_client(connect_timeout_seconds=10, read_timeout_seconds=30, operation_timeout_seconds=4)
    web.on("POST", GRAPHQL, PROJECT)
    client.project("e", "p")
    connect, read = web.requests[0].timeout
    assert connect <= 4 and read <= 4


# ------------------------------------------------------------------ request budget in the client
def test_client_requests_draw_on_the_graphql_budget(web, make_client):
    client = make_client(max_requests_per_second=20, request_burst=1)
    web.on("POST", GRAPHQL, PROJECT)
    started = time.monotonic()
    for _ in range(5):
        client.project("e", "p")
    assert time.monotonic() - started >= 0.18  # 4 waits of 1/20 s


# ------------------------------------------------------------------ circuit breaker
def test_breaker_fails_fast_then_lets_one_probe_through():
    clock = FakeClock()
    breaker = CircuitBreaker(5, clock=clock)
    assert breaker.check("h") is False
    breaker.failure("h", "refused")
    with pytest.raises(Unreachable, match="h was unreachable"):
        breaker.check("h")
    clock.now += 5
    assert breaker.check("h") is True  # the probe
    with pytest.raises(Unreachable):
        breaker.check("h")  # only one at a time
    breaker.failure("h", "still refused")
    clock.now += 4
    with pytest.raises(Unreachable):
        breaker.check("h")
    clock.now += 1
    assert breaker.check("h") is True
    breaker.release("h", True)  # probe ended without an answer either way: next caller probes
    assert breaker.check("h") is True
    breaker.success("h")
    assert breaker.check("h") is False and not breaker.is_open("h")
    assert breaker.check("other") is False


def test_client_fails_fast_after_a_host_was_unreachable(web, make_client):
    client = make_client(max_retries=2, offline_cooldown_seconds=60)
    web.on("POST", GRAPHQL, refused)
    with pytest.raises(Unreachable, match="api.test"):
        client.viewer()
    sent = len(web.requests)
    assert sent == 3
    started = time.monotonic()
    with pytest.raises(Unreachable, match="failing fast"):
        client.project("e", "p")
    assert len(web.requests) == sent and time.monotonic() - started < 0.1


def test_client_recovers_after_the_cooldown(web, make_client):
    client = make_client(max_retries=0, offline_cooldown_seconds=0.05)
    web.on("POST", GRAPHQL, refused, PROJECT)
    with pytest.raises(Unreachable):
        client.project("e", "p")
    deadline = time.monotonic() + 5
    while True:
        try:
            assert client.project("e", "p").name == "p"
            break
        except Unreachable:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_offline_client_never_touches_the_network(web, make_client):
    client = make_client(offline=True)
    f = RunFile(entity="e", project="p", run_id="r", name="d.bin", size_bytes=4, url=None, direct_url=SIGNED)
    for call in (client.viewer, lambda: client.project("e", "p"), lambda: client.read_range(f, 0, 4)):
        with pytest.raises(Unreachable, match="offline"):
            call()
    assert web.requests == []


# ------------------------------------------------------------------ expired URL refresh by exact name
def test_expired_url_of_a_file_listed_without_url_is_refreshed_through_the_files_route(web, client):
    # W&B may send no `url` (wfs does not even ask for it): the API route is {base}/files/<e>/<p>/<r>/<name>.
    web.on("GET", SIGNED, Reply(403, b"<Error>Request has expired</Error>"))
    web.on("GET", API_URL, Reply(302, headers={"Location": FRESH}))
    web.on("GET", FRESH, storage())
    f = RunFile(entity="e", project="p", run_id="r", name="d.bin", size_bytes=len(DATA), url=None, direct_url=SIGNED)
    assert client.read_range(f, 10, 20) == DATA[10:20]
    assert [r.url for r in web.requests] == [SIGNED, API_URL, FRESH]
    assert client.read_range(f, 20, 30) == DATA[20:30]  # the fresh URL is remembered
    assert web.requests[-1].url == FRESH and len(web.requests) == 4


def test_expired_url_is_refreshed_by_exact_name_lookup_when_the_files_route_is_missing(web, client):
    web.on("GET", SIGNED, Reply(403, b"<Error>Request has expired</Error>"))
    web.on("GET", API_URL, Reply(404))
    web.on("POST", GRAPHQL, files_answer(FRESH))
    web.on("GET", FRESH, storage())
    f = RunFile(entity="e", project="p", run_id="r", name="d.bin", size_bytes=len(DATA), url=None, direct_url=SIGNED)
    assert client.read_range(f, 10, 20) == DATA[10:20]
    assert [r.url for r in web.requests] == [SIGNED, API_URL, GRAPHQL, FRESH]
    assert web.requests[2].json()["variables"]["names"] == ["d.bin"]


def test_failing_url_route_falls_back_to_exact_name_lookup(web, make_client):
    client = make_client(max_retries=1)
    web.on("GET", SIGNED, Reply(403))
    web.on("GET", API_URL, Reply(500))
    web.on("POST", GRAPHQL, files_answer(FRESH))
    web.on("GET", FRESH, storage())
    f = RunFile(entity="e", project="p", run_id="r", name="d.bin", size_bytes=len(DATA), url=API_URL,
                direct_url=SIGNED)
    assert client.read_range(f, 0, 8) == DATA[:8]
    assert [r.url for r in web.requests] == [SIGNED, API_URL, API_URL, GRAPHQL, FRESH]


def test_refresh_of_a_file_that_changed_size_is_an_error(web, client):
    from wfs.client import BadResponse

    web.on("GET", SIGNED, Reply(403))
    web.on("POST", GRAPHQL, files_answer(FRESH, size=len(DATA) + 1))
    f = RunFile(entity="e", project="p", run_id="r", name="d.bin", size_bytes=len(DATA), url=None, direct_url=SIGNED)
    with pytest.raises(BadResponse, match="changed"):
        client.read_range(f, 0, 8)
