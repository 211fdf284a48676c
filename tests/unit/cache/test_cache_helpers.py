"""cache_stats / prune_cache / clear_cache on a directory, mounted or not."""

from __future__ import annotations

import os
import time

from cachetest_support import MIB, FakeRemote, files_under

from wfs.cache import BlockCache, cache_stats, clear_cache, layout, prune_cache


def _fill(cache: BlockCache, names: str, size: int) -> dict[str, FakeRemote]:
    remotes = {}
    for i, name in enumerate(names):
        remote = remotes[name] = FakeRemote(size, seed=i)
        with cache.open(name, size, remote) as f:
            f.read(0, size)
    return remotes


def test_helpers_on_an_unmounted_dir(cache_root):
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        _fill(cache, "abc", 2 * MIB)
        expected = cache.stats()
    stats = cache_stats(cache_root)
    assert (stats.objects, stats.blocks, stats.used_bytes) == (3, 6, expected.used_bytes)
    assert stats.max_bytes == 64 * MIB
    now = time.time()
    for age, name in ((30, "a"), (10, "b"), (20, "c")):
        for path in layout.object_dir(cache_root, layout.key_hash(name)).glob("*.blk"):
            os.utime(path, (now - age, now - age))
    prune_cache(cache_root, 4 * layout.charge_bytes(MIB))
    assert cache_stats(cache_root).blocks == 4
    assert not layout.object_dir(cache_root, layout.key_hash("a")).exists()
    clear_cache(cache_root)
    assert cache_stats(cache_root).blocks == 0 and files_under(cache_root, ".blk") == []
    assert not any((cache_root / "objects").glob("*/*"))


def test_helpers_on_a_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    assert cache_stats(missing).used_bytes == 0
    clear_cache(missing)
    prune_cache(missing, 0)
    assert not missing.exists()


def test_clear_while_mounted_then_reads_refetch(cache_root):
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        remotes = _fill(cache, "ab", 2 * MIB)
        handle = cache.open("a", 2 * MIB, remotes["a"])
        clear_cache(cache_root)
        assert files_under(cache_root, ".blk") == []
        calls = len(remotes["a"].calls)
        assert handle.read(0, 2 * MIB) == remotes["a"].content(0, 2 * MIB)  # vanished blocks are misses
        assert len(remotes["a"].calls) == calls + 2
        handle.close()
        assert cache.state("a", 2 * MIB) == "full"
        assert cache_stats(cache_root).blocks == 2
