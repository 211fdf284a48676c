import math
import threading

import pytest

from wfs.client.errors import NotFound, Unreachable
from wfs.namespace.memo import Memo


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_value_served_until_its_ttl_then_reloaded():
    clock, calls = Clock(), []
    memo = Memo(clock=clock)

    def load():
        calls.append(1)
        return len(calls)

    assert memo.get("k", load, lambda v: 5) == 1
    clock.now = 4.9
    assert memo.get("k", load, lambda v: 5) == 1
    clock.now = 5.1
    assert memo.get("k", load, lambda v: 5) == 2


def test_concurrent_callers_load_once():
    memo = Memo()
    started, release = threading.Event(), threading.Event()
    calls = []

    def load():
        calls.append(1)
        started.set()
        assert release.wait(5)
        return "v"

    results = []
    threads = [threading.Thread(target=lambda: results.append(memo.get("k", load, lambda v: math.inf))) for _ in range(16)]
    for t in threads:
        t.start()
    assert started.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert results == ["v"] * 16 and len(calls) == 1


def test_stale_value_served_when_server_unreachable():
    clock = Clock()
    memo = Memo(clock=clock)
    memo.get("k", lambda: "old", lambda v: 1)
    clock.now = 2

    def down():
        raise Unreachable("host")

    assert memo.get("k", down, lambda v: 1) == "old"


def test_errors_propagate_without_a_stale_value():
    memo = Memo()

    def missing():
        raise NotFound("x")

    with pytest.raises(NotFound):
        memo.get("k", missing, lambda v: 1)
    with pytest.raises(Unreachable):
        memo.get("j", lambda: (_ for _ in ()).throw(Unreachable("h")), lambda v: 1)
