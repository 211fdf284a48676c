"""Wrong lengths, md5 checks, and a disk that refuses writes."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest
from cachetest_support import MIB, FakeRemote, files_under, wait_until

from wfs.cache import CacheIntegrityError, layout


@pytest.mark.parametrize("fault", ["short", "long"])
def test_wrong_length_fetch_is_never_cached_and_raises(make_cache, fault):
    cache = make_cache()
    remote = FakeRemote(3 * MIB)
    setattr(remote, fault, True)
    with cache.open("bad", remote.size, remote) as f:
        with pytest.raises(CacheIntegrityError, match="expected 1048576"):
            f.read(0, 10)
        assert files_under(cache.root, ".blk") == []
        assert cache.state("bad", remote.size) == "none"
        setattr(remote, fault, False)
        assert f.read(0, 10) == remote.content(0, 10)


def test_md5_mismatch_on_a_small_object_refetches_once_then_fails(make_cache, caplog):
    cache = make_cache()
    remote = FakeRemote(100_000)
    remote.corrupt = True
    with cache.open("m", remote.size, remote, md5_b64=remote.md5_b64()) as f:
        with pytest.raises(CacheIntegrityError, match="md5"):
            f.read(0, 10)
        assert len(remote.calls) == 2
        with pytest.raises(CacheIntegrityError):
            f.read(0, 10)
        assert len(remote.calls) == 2
    assert files_under(cache.root, ".blk") == []
    assert any(r.levelno == logging.ERROR and "md5" in r.getMessage() for r in caplog.records)


def test_md5_ok_on_a_small_object_is_checked_before_serving_and_recorded(make_cache):
    cache = make_cache()
    remote = FakeRemote(100_000)
    with cache.open("ok", remote.size, remote, md5_b64=remote.md5_b64()) as f:
        assert f.read(0, remote.size) == remote.content(0, remote.size)
    meta = json.loads((layout.object_dir(cache.root, layout.key_hash("ok")) / "meta.json").read_bytes())
    assert meta["verified"] is True and len(remote.calls) == 1


def test_md5_mismatch_on_a_large_object_discards_refetches_once_then_fails(make_cache):
    cache = make_cache(readahead_max_bytes=0)
    remote = FakeRemote(3 * MIB + 7)
    wrong = FakeRemote(remote.size, seed=9).md5_b64()
    with cache.open("big", remote.size, remote, md5_b64=wrong) as f:
        f.read(0, remote.size)
        assert len(remote.calls) == 4
        wait_until(lambda: cache.state("big", remote.size) == "none")  # discarded in the background
        f.read(0, remote.size)  # refetched once
        assert len(remote.calls) == 8
        wait_until(lambda: cache.state("big", remote.size) == "none")
        with pytest.raises(CacheIntegrityError):
            f.read(0, 10)
    assert len(remote.calls) == 8 and files_under(cache.root, ".blk") == []


def test_prefetch_wait_verifies_and_raises_on_mismatch(make_cache):
    cache = make_cache()
    good = FakeRemote(5 * MIB)
    cache.prefetch("good", good.size, good, md5_b64=good.md5_b64(), wait=True)
    assert cache.state("good", good.size) == "full"
    meta = json.loads((layout.object_dir(cache.root, layout.key_hash("good")) / "meta.json").read_bytes())
    assert meta["verified"] is True
    bad = FakeRemote(5 * MIB, seed=3)
    with pytest.raises(CacheIntegrityError):
        cache.prefetch("bad", bad.size, bad, md5_b64=good.md5_b64(), wait=True)
    assert len(bad.calls) == 10


def test_prefetch_in_background_fills_the_object(make_cache):
    cache = make_cache()
    remote = FakeRemote(6 * MIB + 1)
    cache.prefetch("bg", remote.size, remote)
    wait_until(lambda: cache.state("bg", remote.size) == "full")
    assert set(remote.starts().values()) == {1} and len(remote.calls) == 7


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_disk_write_errors_still_serve_the_right_bytes(make_cache, monkeypatch, caplog, code):
    def failing_write(fd, data):
        os.write(fd, bytes(memoryview(data)[: len(data) // 2]))  # a partial temp file, then the error
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(layout, "_write_fd", failing_write)
    cache = make_cache()
    remote = FakeRemote(4 * MIB + 3)
    with cache.open("full", remote.size, remote) as f:
        for offset in range(0, remote.size, 256 * 1024):
            assert f.read(offset, 256 * 1024) == remote.content(offset, offset + 256 * 1024)
    assert [p for p in files_under(cache.root) if p.name.endswith(".blk") or ".tmp." in p.name] == []
    assert cache.stats().used_bytes == 0
    assert len(remote.calls) <= 6  # blocks kept in memory: no refetch per read
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "refused a write" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: once, not per read
    assert os.strerror(code) in warnings[0].getMessage()
