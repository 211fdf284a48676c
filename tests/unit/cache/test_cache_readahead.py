"""Sequential reads fetch ahead; random reads fetch only what they touch."""

from __future__ import annotations

import random

from cachetest_support import KIB, MIB, FakeRemote, wait_until

from wfs.cache.readahead import ReadAhead


def test_sequential_reads_fetch_later_blocks_before_they_are_read(make_cache):
    cache = make_cache(max_bytes=256 * MIB, block_size_bytes=MIB, readahead_max_bytes=8 * MIB)
    remote = FakeRemote(24 * MIB)
    step = 128 * KIB
    with cache.open("seq", remote.size, remote) as f:
        for offset in range(0, remote.size, step):
            index = offset // MIB
            if offset % MIB == 0 and index >= 2:
                wait_until(lambda: index * MIB in remote.starts())  # asked for before we read it
            assert f.read(offset, step) == remote.content(offset, offset + step)
    assert set(remote.starts().values()) == {1} and len(remote.calls) == 24


def test_readahead_window_grows_and_is_capped():
    ra = ReadAhead(MIB, 1000, 8)
    fetched = []
    for offset in range(0, 40 * MIB, 128 * KIB):
        blocks, seek = ra.on_read(offset, offset + 128 * KIB)
        assert not seek
        fetched.extend(blocks)
    assert fetched == list(range(1, 48))
    assert ra.window_blocks == 8
    blocks, seek = ra.on_read(500 * MIB, 500 * MIB + 4096)
    assert seek and list(blocks) == [] and ra.window_blocks == 0


def test_random_reads_do_not_over_fetch(make_cache):
    cache = make_cache(max_bytes=256 * MIB, block_size_bytes=MIB)
    remote = FakeRemote(64 * MIB)
    rng = random.Random(5)
    touched = set()
    with cache.open("rand", remote.size, remote) as f:
        header_len = int.from_bytes(f.read(0, 8), "little") % 100_000 + 1000  # safetensors-style
        f.read(8, header_len)
        touched.add(0)
        for _ in range(40):
            offset = rng.randrange(remote.size - 4096)
            assert f.read(offset, 4096) == remote.content(offset, offset + 4096)
            touched.update({offset // MIB, (offset + 4095) // MIB})
    wait_until(lambda: not cache._futures)
    fetched_blocks = {start // MIB for start in remote.starts()}
    assert fetched_blocks == touched
    assert remote.fetched_bytes <= len(touched) * MIB


def test_a_seek_cancels_queued_readahead(make_cache):
    import threading

    cache = make_cache(max_bytes=256 * MIB, block_size_bytes=MIB, readahead_max_bytes=16 * MIB, max_workers=1)
    remote = FakeRemote(64 * MIB)
    gate = threading.Event()
    remote.on_call = lambda start, end: start == 2 * MIB and gate.wait(30)
    with cache.open("seek", remote.size, remote) as f:
        for offset in range(0, 2 * MIB, 128 * KIB):  # sequential through blocks 0 and 1
            f.read(offset, 128 * KIB)
        wait_until(lambda: 2 * MIB in remote.starts())  # the one worker is stuck on block 2
        f.read(40 * MIB, 4096)  # seek: blocks 3.. queued behind it are cancelled
        gate.set()
        wait_until(lambda: not cache._futures)
    assert {start // MIB for start in remote.starts()} <= {0, 1, 2, 40}
