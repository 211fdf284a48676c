"""The hard cap: enforced at insertion, LRU order, pinned blocks stay."""

from __future__ import annotations

import threading

from cachetest_support import MIB, FakeRemote, dir_total, du_bytes, files_under, wait_until

from wfs.cache import layout


def test_64mib_cap_holds_after_every_read_of_200mb(make_cache):
    cap, block = 64 * MIB, 8 * MIB
    cache = make_cache(max_bytes=cap, block_size_bytes=block)
    remotes = [FakeRemote(50 * 1000 * 1000, seed=i) for i in range(4)]  # 200 MB in all
    for i, remote in enumerate(remotes):
        with cache.open(f"obj{i}", remote.size, remote) as f:
            for offset in range(0, remote.size, 4 * MIB):
                assert f.read(offset, 4 * MIB) == remote.content(offset, offset + 4 * MIB)
                assert dir_total(cache.root) <= cap + block
                assert du_bytes(cache.root / "objects") <= cap + block
                assert cache.stats().used_bytes <= cap
    stats = cache.stats()
    assert stats.evictions > 0 and stats.used_bytes <= cap
    # read-ahead finished in the background must not break the cap either
    wait_until(lambda: not cache._futures)
    assert dir_total(cache.root) <= cap + block


def test_lru_order_evicts_least_recently_used(make_cache):
    charge = layout.charge_bytes(MIB)
    cache = make_cache(max_bytes=3 * charge, block_size_bytes=MIB, readahead_max_bytes=0)
    remotes = {name: FakeRemote(MIB, seed=i) for i, name in enumerate("abcd")}
    handles = {name: cache.open(name, MIB, remote) for name, remote in remotes.items()}
    for name in "abc":
        handles[name].read(0, 1)
    handles["a"].read(0, 1)  # a becomes most recent; b is now the oldest
    handles["d"].read(0, 1)
    assert [cache.state(n, MIB) for n in "abcd"] == ["full", "none", "full", "full"]
    for handle in handles.values():
        handle.close()
    assert not layout.object_dir(cache.root, layout.key_hash("b")).exists()


def test_pinned_blocks_are_not_evicted_during_a_read(make_cache):
    charge = layout.charge_bytes(MIB)
    cache = make_cache(max_bytes=2 * charge, block_size_bytes=MIB, readahead_max_bytes=0)
    remote_a = FakeRemote(2 * MIB, seed=1)
    gate = threading.Event()
    # block 1 of a waits at the gate; block 0 arrives and is stored, pinned by the read
    remote_a.on_call = lambda start, end: start == MIB and gate.wait(30)
    result = {}
    with cache.open("a", remote_a.size, remote_a) as fa:
        reader = threading.Thread(target=lambda: result.setdefault("a", fa.read(MIB - 100, 200)))
        reader.start()
        wait_until(lambda: cache.state("a", remote_a.size) == "partial" and len(remote_a.calls) == 2)
        remote_b = FakeRemote(2 * MIB, seed=2)
        with cache.open("b", remote_b.size, remote_b) as fb:
            # needs room, but the only block on disk is pinned: served without caching it
            assert fb.read(0, 2 * MIB) == remote_b.content(0, 2 * MIB)
        assert cache.state("a", remote_a.size) == "partial"
        assert cache.stats().used_bytes <= 2 * charge
        gate.set()
        reader.join(10)
    assert result["a"] == remote_a.content(MIB - 100, MIB + 100)
    assert sorted(remote_a.calls) == [(0, MIB), (MIB, 2 * MIB)]
    assert cache.state("a", remote_a.size) == "full"


def test_zero_cap_caches_nothing_but_reads_work(make_cache):
    cache = make_cache(max_bytes=0, block_size_bytes=MIB)
    remote = FakeRemote(3 * MIB)
    with cache.open("z", remote.size, remote) as f:
        assert f.read(0, remote.size) == remote.content(0, remote.size)
    assert files_under(cache.root, ".blk") == []


def test_prune_and_clear_methods(make_cache):
    cache = make_cache(readahead_max_bytes=0)
    remote = FakeRemote(10 * MIB)
    with cache.open("p", remote.size, remote) as f:
        f.read(0, remote.size)
        f.read(0, 1)  # block 0 becomes most recent
    cache.prune(3 * layout.charge_bytes(MIB))
    stats = cache.stats()
    assert stats.blocks == 3 and stats.evictions == 7
    assert len(files_under(cache.root, ".blk")) == 3
    with cache.open("p", remote.size, remote) as f:
        calls = len(remote.calls)
        f.read(0, 1)
        assert len(remote.calls) == calls
    cache.clear()
    assert cache.stats().used_bytes == 0 and files_under(cache.root, ".blk") == []
    assert cache.state("p", remote.size) == "none"
