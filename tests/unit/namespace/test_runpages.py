"""RunPages: a project's runs fetched a page at a time, never twice, never lost."""

from __future__ import annotations

import threading

import pytest

from wfs.client.errors import TransientError
from wfs.client.models import Run
from wfs.namespace.runpages import RunPages


class Pages:
    """A fake W&B runs connection: pages of ``size`` over ``total`` runs, counting requests."""

    def __init__(self, total: int, size: int = 10) -> None:
        self.runs = [Run("e", "p", f"r{i:03d}") for i in range(total)]
        self.size = size
        self.requests: list[str | None] = []
        self.fail = 0  # the next N fetches raise TransientError
        self.gate: threading.Event | None = None

    def __call__(self, after: str | None):
        self.requests.append(after)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            self.fail -= 1
            raise TransientError("W&B unreachable")
        start = int(after) if after else 0
        end = start + self.size
        return self.runs[start:end], (str(end) if end < len(self.runs) else None)


def test_only_the_pages_up_to_the_position_asked_are_fetched():
    source = Pages(35)
    pages = RunPages(source)
    assert source.requests == []
    assert pages.run(0).run_id == "r000"
    assert pages.run(9).run_id == "r009"
    assert source.requests == [None]
    assert pages.run(10).run_id == "r010"
    assert source.requests == [None, "10"]
    assert not pages.complete
    assert [r.run_id for r in pages.all()] == [f"r{i:03d}" for i in range(35)]
    assert source.requests == [None, "10", "20", "30"] and pages.complete
    assert pages.run(35) is None and len(source.requests) == 4


def test_a_failed_page_is_fetched_again_and_nothing_is_lost():
    source = Pages(25)
    seen: list[str] = []
    pages = RunPages(source, on_run=lambda run: seen.append(run.run_id))
    pages.run(0)
    source.fail = 1
    with pytest.raises(TransientError):
        pages.run(15)
    assert pages.run(15).run_id == "r015"
    assert source.requests == [None, "10", "10"]
    assert len(pages.all()) == 25 and seen == [f"r{i:03d}" for i in range(25)]


def test_an_outage_serves_the_previous_listing_instead_of_an_error():
    old_source = Pages(25)
    old = RunPages(old_source)
    old.all()
    source = Pages(30)
    source.fail = 99
    fresh = RunPages(source, previous=old)
    assert [r.run_id for r in fresh.all()] == [f"r{i:03d}" for i in range(25)]
    alone = Pages(5)
    alone.fail = 1
    with pytest.raises(TransientError):  # nothing earlier to fall back on
        RunPages(alone).run(0)


def test_repeated_runs_across_a_shifted_page_boundary_are_listed_once():
    source = Pages(20)
    pages = RunPages(lambda after: (source.runs[:12], "10") if after is None else (source.runs[8:20], None))
    assert [r.run_id for r in pages.all()] == [f"r{i:03d}" for i in range(20)]


def test_sixteen_threads_reading_the_same_page_cause_one_request():
    source = Pages(100, size=50)
    source.gate = threading.Event()
    pages = RunPages(source)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(pages.run(5).run_id)) for _ in range(16)]
    for t in threads:
        t.start()
    source.gate.set()
    for t in threads:
        t.join(10)
    assert results == ["r005"] * 16
    assert source.requests == [None]


def test_cursors_that_go_round_end_the_listing_instead_of_fetching_forever():
    source = Pages(20)
    requests: list[str | None] = []

    def cycling(after):  # page 2 points back to page 1
        requests.append(after)
        return (source.runs[:10], "B") if after in (None, "C") else (source.runs[10:20], "C")

    pages = RunPages(cycling)
    assert pages.run(100) is None
    assert pages.complete and len(pages) == 20
    assert requests == [None, "B", "C"]
