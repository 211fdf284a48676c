"""Restarts: the index is rebuilt from disk, bad leftovers are removed."""

from __future__ import annotations

import json
import os
import time

from cachetest_support import MIB, FakeRemote, files_under, wait_until

import wfs.cache.blockstore as blockstore
from wfs.cache import BlockCache, layout


def test_restart_serves_with_zero_fetches(cache_root):
    remote = FakeRemote(5 * MIB + 99)
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        with cache.open("obj", remote.size, remote) as f:
            f.read(0, remote.size)
    calls = len(remote.calls)
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        assert cache.state("obj", remote.size) == "full"
        assert cache.stats().blocks == 6
        with cache.open("obj", remote.size, remote) as f:
            assert f.read(0, remote.size) == remote.content(0, remote.size)
    assert len(remote.calls) == calls


def test_rebuild_discards_bad_blocks_and_temp_files(cache_root):
    remote = FakeRemote(4 * MIB + 10)
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        with cache.open("obj", remote.size, remote) as f:
            f.read(0, remote.size)
    obj_dir = layout.object_dir(cache_root, layout.key_hash("obj"))
    os.truncate(obj_dir / "1.blk", MIB - 1)  # truncated
    os.truncate(obj_dir / "4.blk", 11)  # last block, foreign length
    (obj_dir / "9.blk").write_bytes(b"x" * MIB)  # index past the end
    (obj_dir / "01.blk").write_bytes(b"x" * MIB)  # not a canonical name
    (obj_dir / ".tmp.999999999.abcd.2.blk").write_bytes(b"partial")  # dead writer
    orphan = cache_root / "objects" / "ab" / ("ab" + "0" * 62)
    orphan.mkdir(parents=True)
    (orphan / "0.blk").write_bytes(b"no meta")
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        names = sorted(p.name for p in obj_dir.iterdir())
        assert names == ["0.blk", "2.blk", "3.blk", "meta.json"]
        assert not orphan.exists()
        assert cache.state("obj", remote.size) == "partial"
        before = len(remote.calls)
        with cache.open("obj", remote.size, remote) as f:
            assert f.read(0, remote.size) == remote.content(0, remote.size)
        assert sorted(remote.calls[before:]) == [(MIB, 2 * MIB), (4 * MIB, 4 * MIB + 10)]


def test_recency_survives_restart(cache_root):
    remotes = {name: FakeRemote(MIB, seed=i) for i, name in enumerate("abc")}
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        for name, remote in remotes.items():
            with cache.open(name, remote.size, remote) as f:
                f.read(0, 1)
    now = time.time()
    for age, name in ((300, "a"), (100, "b"), (200, "c")):  # b newest, a oldest
        path = layout.object_dir(cache_root, layout.key_hash(name)) / "0.blk"
        os.utime(path, (now - age, now - age))
    charge = layout.charge_bytes(MIB)
    with BlockCache(cache_root, 2 * charge, MIB) as cache:  # room for two: a goes
        assert [cache.state(n, MIB) for n in "abc"] == ["none", "full", "full"]


def test_verified_flag_persisted_and_not_rehashed(cache_root, monkeypatch):
    remote = FakeRemote(3 * MIB + 5)
    md5 = remote.md5_b64()
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        with cache.open("v", remote.size, remote, md5_b64=md5) as f:
            f.read(0, remote.size)
        meta_path = layout.object_dir(cache_root, layout.key_hash("v")) / "meta.json"
        wait_until(lambda: json.loads(meta_path.read_bytes())["verified"])
    meta = json.loads(meta_path.read_bytes())
    assert meta["md5_b64"] == md5 and meta["size_bytes"] == remote.size and meta["key"] == "v"
    hashed = []
    real = blockstore.BlockCache._verify_object
    monkeypatch.setattr(blockstore.BlockCache, "_verify_object",
                        lambda self, obj: hashed.append(obj) or real(self, obj))
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        with cache.open("v", remote.size, remote, md5_b64=md5) as f:
            assert f.read(0, remote.size) == remote.content(0, remote.size)
    assert hashed == []


def test_rebuild_of_10gb_equivalent_is_fast(tmp_path):
    """1,300 sparse 8 MiB blocks in 100 objects; report the time with -s."""
    root = tmp_path / "big"
    block = 8 * MIB
    for n in range(100):
        key = f"obj-{n}"
        directory = layout.object_dir(root, layout.key_hash(key))
        directory.mkdir(parents=True)
        layout.write_meta(directory, layout.Meta(key, 13 * block, block))
        for index in range(13):
            with open(directory / f"{index}.blk", "wb") as f:
                f.truncate(block)
    started = time.monotonic()
    cache = BlockCache(root, 20 * 1024 * MIB, block)
    elapsed = time.monotonic() - started
    try:
        assert cache.stats().blocks == 1300 and cache.stats().objects == 100
    finally:
        cache.close()
    print(f"\nrebuild of 1,300 blocks / 100 objects: {elapsed * 1000:.1f} ms")
    assert elapsed < 5.0
    assert len(files_under(root, ".blk")) == 1300
