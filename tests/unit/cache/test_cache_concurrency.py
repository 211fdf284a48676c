"""Single flight across threads, instances and processes."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from cachetest_support import MIB, FakeRemote, wait_until

from wfs.cache import BlockCache, layout


def test_8_threads_on_a_cold_object_fetch_each_block_once(make_cache):
    cache = make_cache(block_size_bytes=MIB)
    remote = FakeRemote(6 * MIB + 1234, delay=0.02)
    barrier = threading.Barrier(8)
    results: list[bytes] = [b""] * 8

    def reader(n: int) -> None:
        with cache.open("cold", remote.size, remote) as f:
            barrier.wait()
            step = 128 * 1024 if n % 2 else 1000 * 1000
            results[n] = b"".join(f.read(o, step) for o in range(0, remote.size, step))

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    expected = remote.content(0, remote.size)
    assert all(r == expected for r in results)
    assert set(remote.starts().values()) == {1} and len(remote.calls) == 7


def test_fetch_error_reaches_every_waiter(make_cache):
    cache = make_cache()
    remote = FakeRemote(MIB)
    remote.gate = threading.Event()
    remote.fail = ConnectionResetError("peer reset")
    errors = []

    def reader() -> None:
        with cache.open("e", remote.size, remote) as f:
            try:
                f.read(0, 100)
            except ConnectionResetError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: cache._flights.in_flight((layout.key_hash("e"), 0)))
    remote.gate.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 4 and len(remote.calls) <= 4
    remote.fail, remote.gate = None, None
    with cache.open("e", remote.size, remote) as f:
        assert f.read(0, 100) == remote.content(0, 100)


def test_two_instances_on_one_dir_fetch_a_block_once(cache_root):
    first = BlockCache(cache_root, 64 * MIB, MIB)
    second = BlockCache(cache_root, 64 * MIB, MIB)
    try:
        remote_1 = FakeRemote(MIB)
        remote_1.gate = threading.Event()
        remote_2 = FakeRemote(MIB)
        out = {}
        t1 = threading.Thread(target=lambda: out.setdefault(1, first.open("k", MIB, remote_1).read(0, MIB)))
        t1.start()
        assert remote_1.entered.wait(10)  # first holds the block's flock, fetching
        t2 = threading.Thread(target=lambda: out.setdefault(2, second.open("k", MIB, remote_2).read(0, MIB)))
        t2.start()
        remote_1.gate.set()
        t1.join(10)
        t2.join(10)
        assert out[1] == out[2] == remote_1.content(0, MIB)
        assert len(remote_1.calls) == 1 and remote_2.calls == []
        assert second.state("k", MIB) == "full"
    finally:
        first.close()
        second.close()


def _child_reads(root: str, started_path: str, count_path: str) -> None:
    remote = FakeRemote(3 * MIB)

    def fetch(start: int, end: int) -> bytes:
        Path(started_path).write_text("fetching")
        import time

        time.sleep(0.3)  # hold the flock for a while; the parent is waiting on it or finds the file
        with open(count_path, "a") as f:
            f.write(f"{start}\n")
        return remote(start, end)

    with BlockCache(Path(root), 64 * MIB, MIB, readahead_max_bytes=0) as cache:
        with cache.open("shared", remote.size, fetch) as f:
            assert f.read(MIB, 100) == remote.content(MIB, MIB + 100)


def test_a_child_process_and_the_parent_fetch_a_block_once(cache_root, tmp_path):
    started, count = tmp_path / "started", tmp_path / "count"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child_reads, args=(str(cache_root), str(started), str(count)))
    child.start()
    try:
        wait_until(started.exists, timeout=30)
        remote = FakeRemote(3 * MIB)
        with BlockCache(cache_root, 64 * MIB, MIB, readahead_max_bytes=0) as cache:
            with cache.open("shared", remote.size, remote) as f:
                assert f.read(MIB, 100) == remote.content(MIB, MIB + 100)
        assert remote.calls == []
    finally:
        child.join(30)
    assert child.exitcode == 0
    assert count.read_text().split() == [str(MIB)]
