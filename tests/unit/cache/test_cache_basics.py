"""Which fetches a read causes, and what it returns."""

from __future__ import annotations

import os
import stat
import threading
import time

from cachetest_support import GIB, KIB, MIB, FakeRemote, files_under

from wfs.cache import BlockCache


def test_small_file_is_fetched_whole_in_one_call(make_cache):
    cache = make_cache(block_size_bytes=8 * MIB)
    remote = FakeRemote(100 * KIB + 7)
    with cache.open("small", remote.size, remote) as f:
        assert f.read(10, 20) == remote.content(10, 30)
        assert f.read(0, remote.size) == remote.content(0, remote.size)
    assert remote.calls == [(0, remote.size)]


def test_4k_read_of_1gib_object_fetches_one_block(make_cache):
    cache = make_cache(max_bytes=64 * MIB, block_size_bytes=8 * MIB)
    remote = FakeRemote(1 * GIB)
    with cache.open("big", remote.size, remote) as f:
        assert f.read(300 * MIB + 5, 4096) == remote.content(300 * MIB + 5, 300 * MIB + 5 + 4096)
    assert remote.calls == [(296 * MIB, 304 * MIB)]


def test_read_straddling_a_boundary_fetches_exactly_two_blocks(make_cache):
    cache = make_cache(block_size_bytes=8 * MIB)
    remote = FakeRemote(64 * MIB)
    offset = 16 * MIB - 512 * KIB
    with cache.open("straddle", remote.size, remote) as f:
        assert f.read(offset, 1 * MIB) == remote.content(offset, offset + MIB)
    assert sorted(remote.calls) == [(8 * MIB, 16 * MIB), (16 * MIB, 24 * MIB)]


def test_reread_fetches_nothing(make_cache):
    cache = make_cache()
    remote = FakeRemote(5 * MIB + 3)
    with cache.open("k", remote.size, remote) as f:
        first = f.read(0, remote.size)
    calls = list(remote.calls)
    with cache.open("k", remote.size, remote) as f:
        assert f.read(0, remote.size) == first == remote.content(0, remote.size)
        assert f.read(MIB - 3, 10) == remote.content(MIB - 3, MIB + 7)
    assert remote.calls == calls
    stats = cache.stats()
    assert stats.hits > 0 and stats.bytes_fetched == remote.size


def test_eof_is_clamped(make_cache):
    cache = make_cache()
    remote = FakeRemote(3 * MIB + 10)
    with cache.open("eof", remote.size, remote) as f:
        assert f.read(remote.size - 4, 100) == remote.content(remote.size - 4, remote.size)
        assert f.read(remote.size, 100) == b""
        assert f.read(remote.size + 5000, 1) == b""
        assert f.read(0, 0) == b""


def test_empty_object(make_cache):
    cache = make_cache()
    remote = FakeRemote(0)
    with cache.open("empty", 0, remote) as f:
        assert f.read(0, 4096) == b""
    assert remote.calls == []
    assert cache.state("empty", 0) == "full"


def test_state_none_partial_full(make_cache):
    cache = make_cache(readahead_max_bytes=0)
    remote = FakeRemote(3 * MIB)
    assert cache.state("s", remote.size) == "none"
    with cache.open("s", remote.size, remote) as f:
        f.read(0, 10)
        assert cache.state("s", remote.size) == "partial"
        f.read(0, remote.size)
    assert cache.state("s", remote.size) == "full"
    assert cache.state("s", remote.size + 1) == "none"
    assert cache.state("other", remote.size) == "none"


def test_fetch_error_reaches_the_reader_and_the_next_read_retries(make_cache):
    cache = make_cache()
    remote = FakeRemote(2 * MIB)
    remote.fail = TimeoutError("remote timed out")
    with cache.open("err", remote.size, remote) as f:
        try:
            f.read(0, 10)
        except TimeoutError as exc:
            assert str(exc) == "remote timed out"
        else:
            raise AssertionError("fetch error was swallowed")
        remote.fail = None
        assert f.read(0, 10) == remote.content(0, 10)
    assert files_under(cache.root, ".blk")


def test_names_and_modes_on_disk(make_cache):
    cache = make_cache()
    remote = FakeRemote(2 * MIB)
    key = "path:../../etc/passwd@1:2097152"
    with cache.open(key, remote.size, remote) as f:
        f.read(0, remote.size)
    blocks = files_under(cache.root, ".blk")
    assert len(blocks) == 2
    for block in blocks:
        assert block.resolve().is_relative_to((cache.root / "objects").resolve())
        assert stat.S_IMODE(block.stat().st_mode) == 0o600
        assert "passwd" not in str(block)
    for directory in {b.parent for b in blocks} | {b.parent.parent for b in blocks} | {cache.root}:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_stats_counts(make_cache):
    cache = make_cache(readahead_max_bytes=0)
    remote = FakeRemote(3 * MIB)
    with cache.open("st", remote.size, remote) as f:
        f.read(0, 100)
        f.read(0, 100)
    stats = cache.stats()
    assert (stats.objects, stats.blocks, stats.misses, stats.hits) == (1, 1, 1, 1)
    assert stats.bytes_fetched == MIB and stats.hit_rate == 0.5
    assert MIB <= stats.used_bytes <= MIB + 16 * KIB


def test_close_is_bounded_with_a_fetch_stuck(cache_root):
    cache = BlockCache(cache_root, 64 * MIB, MIB, max_workers=2)
    remote = FakeRemote(32 * MIB)
    remote.gate = threading.Event()
    f = cache.open("stuck", remote.size, remote)
    reader = threading.Thread(target=lambda: f.read(0, MIB), daemon=True)
    reader.start()
    assert remote.entered.wait(10)
    cache.prefetch("stuck", remote.size, remote)  # queues 31 blocks behind 2 workers
    started = time.monotonic()
    cache.close(timeout_seconds=0.5)
    assert time.monotonic() - started < 3
    remote.gate.set()
    reader.join(10)
    assert len(remote.calls) <= 3  # the queued prefetch was cancelled
