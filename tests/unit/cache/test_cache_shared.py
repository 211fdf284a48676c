"""One cap for the whole directory: several processes (or instances) sharing a cache dir, and the usage ledger."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from cachetest_support import MIB, FakeRemote, accounted_bytes, disk_bytes, files_under, ledger_bytes, wait_until

from wfs.cache import BlockCache, clear_cache, layout, prune_cache

CHARGE = layout.charge_bytes(MIB)
USAGE_NAME = "usage"


def encode(total: int) -> bytes:
    from wfs.cache.ledger import encode as ledger_encode  # not at the top: the module is new

    return ledger_encode(total)


def _disk(root: Path) -> int:
    return disk_bytes(root)


def _age(root: Path, key: str, seconds: float) -> None:
    """Make the blocks of ``key`` look last used ``seconds`` ago."""
    then = time.time() - seconds
    for path in layout.object_dir(root, layout.key_hash(key)).glob("*.blk"):
        os.utime(path, (then, then))


# ------------------------------------------------------------------ two processes, one cap
def _reader_process(root: str, cap: int, seed: int, go, report: str) -> None:
    """Read 6 objects of 4 blocks each (4 times the cap) and check the cap after every read."""
    worst = 0
    with BlockCache(Path(root), cap, MIB) as cache:
        Path(report + ".ready").touch()
        assert go.wait(30)
        for n in range(6):
            remote = FakeRemote(4 * MIB - 1000 * n, seed=seed + n, delay=0.003)
            with cache.open(f"p{seed}-{n}", remote.size, remote) as f:
                for offset in range(0, remote.size, MIB // 2):
                    assert f.read(offset, MIB // 2) == remote.content(offset, offset + MIB // 2)
                    used = accounted_bytes(Path(root))
                    worst = max(worst, used)
                    assert used <= cap, (used, cap)
    Path(report).write_text(str(worst))


def test_two_processes_on_one_dir_stay_under_one_cap(cache_root, tmp_path):
    cap = 6 * CHARGE
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    reports = [tmp_path / "r1", tmp_path / "r2"]
    children = [ctx.Process(target=_reader_process, args=(str(cache_root), cap, seed, go, str(report)))
                for seed, report in ((100, reports[0]), (200, reports[1]))]
    for child in children:
        child.start()
    samples, done = [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            if (cache_root / "objects").is_dir():
                samples.append(accounted_bytes(cache_root))
            done.wait(0.01)

    sampler = threading.Thread(target=sample)
    try:
        wait_until(lambda: all(Path(f"{report}.ready").exists() for report in reports), timeout=60)
        sampler.start()
        go.set()
        for child in children:
            child.join(120)
    finally:
        done.set()
        if sampler.is_alive():
            sampler.join(10)
        for child in children:
            if child.is_alive():
                child.kill()
    assert [child.exitcode for child in children] == [0, 0]
    assert samples and max(samples) <= cap, (max(samples), cap)
    # together they wanted far more than the cap: evictions happened and the directory was really full
    assert max(int(report.read_text()) for report in reports) >= cap - 2 * CHARGE
    assert _disk(cache_root) <= cap
    assert ledger_bytes(cache_root) == _disk(cache_root)


# ------------------------------------------------------------------ eviction across instances
def test_lru_is_the_directory_s_and_a_block_evicted_by_another_process_is_refetched(cache_root):
    cap = 3 * CHARGE
    first = BlockCache(cache_root, cap, MIB, readahead_max_bytes=0)
    second = BlockCache(cache_root, cap, MIB, readahead_max_bytes=0)
    try:
        remotes = {name: FakeRemote(MIB, seed=i) for i, name in enumerate("abcd")}
        with first.open("a", MIB, remotes["a"]) as f:
            assert f.read(0, MIB) == remotes["a"].content(0, MIB)
        _age(cache_root, "a", 600)  # the oldest block of the directory, known to `first` only
        for name in "bc":
            with second.open(name, MIB, remotes[name]) as f:
                f.read(0, MIB)
        with second.open("d", MIB, remotes["d"]) as f:  # full: the directory's oldest block goes
            assert f.read(0, MIB) == remotes["d"].content(0, MIB)
        assert [second.state(n, MIB) for n in "bcd"] == ["full"] * 3
        assert not (layout.object_dir(cache_root, layout.key_hash("a")) / "0.blk").exists()
        assert ledger_bytes(cache_root) == _disk(cache_root) == 3 * CHARGE

        # `first` still believes it has "a": its read finds the file gone and fetches it again
        assert first.state("a", MIB) == "full"
        calls = len(remotes["a"].calls)
        with first.open("a", MIB, remotes["a"]) as f:
            assert f.read(0, MIB) == remotes["a"].content(0, MIB)
        assert len(remotes["a"].calls) == calls + 1
        assert first.state("a", MIB) == "full"
        assert first.stats().used_bytes == CHARGE  # "a", counted once
        assert ledger_bytes(cache_root) == _disk(cache_root) == 3 * CHARGE
        # ... and made room by evicting the oldest of `second`'s blocks, which `second` refetches in turn
        gone = [n for n in "bcd" if not (layout.object_dir(cache_root, layout.key_hash(n)) / "0.blk").exists()]
        assert gone == ["b"]
        with second.open("b", MIB, remotes["b"]) as f:
            assert f.read(0, MIB) == remotes["b"].content(0, MIB)
        assert ledger_bytes(cache_root) == _disk(cache_root) == 3 * CHARGE
    finally:
        first.close()
        second.close()
    assert ledger_bytes(cache_root) == _disk(cache_root)


def test_many_mixed_operations_from_two_instances_keep_the_ledger_equal_to_the_disk(cache_root):
    cap = 8 * CHARGE
    first = BlockCache(cache_root, cap, MIB)
    second = BlockCache(cache_root, cap, MIB, readahead_max_bytes=2 * MIB)
    try:
        remotes = [FakeRemote((1 + n % 4) * MIB - 1000 * (n % 3), seed=n) for n in range(12)]
        errors = []

        def work(cache: BlockCache, names: range) -> None:
            try:
                for n in names:
                    remote = remotes[n]
                    with cache.open(f"o{n}", remote.size, remote, md5_b64=remote.md5_b64() if n % 2 else None) as f:
                        for offset in range(0, remote.size, 700_000):
                            assert f.read(offset, 700_000) == remote.content(offset, offset + 700_000)
                            assert accounted_bytes(cache_root) <= cap
                    if n % 5 == 0:
                        cache.prune(2 * CHARGE)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(first, range(0, 12, 2))),
                   threading.Thread(target=work, args=(second, range(1, 12, 2))),
                   threading.Thread(target=work, args=(second, range(0, 12, 3)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        wait_until(lambda: not first._futures and not second._futures)
        assert ledger_bytes(cache_root) == _disk(cache_root) <= cap
        prune_cache(cache_root, 3 * CHARGE)  # while both are open
        assert ledger_bytes(cache_root) == _disk(cache_root) <= 3 * CHARGE
        for cache in (first, second):
            with cache.open("o5", remotes[5].size, remotes[5]) as f:
                assert f.read(0, remotes[5].size) == remotes[5].content(0, remotes[5].size)
        wait_until(lambda: not first._futures and not second._futures)
        assert ledger_bytes(cache_root) == _disk(cache_root) <= cap
    finally:
        first.close()
        second.close()
    assert ledger_bytes(cache_root) == _disk(cache_root)


# ------------------------------------------------------------------ the ledger: drift and recounts
def _die_while_storing(root: str, where: str) -> None:
    """Store block 0 of an object, then SIGKILL ourselves while storing block 1."""
    import wfs.cache.layout as child_layout

    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    blocks = []
    if where == "before_rename":  # room reserved and counted, temp file half written
        real_write_fd = child_layout._write_fd

        def write_fd(fd, data):
            if len(data) == MIB:
                blocks.append(1)
                if len(blocks) == 2:
                    real_write_fd(fd, bytes(data)[:1000])
                    kill()
            real_write_fd(fd, data)

        child_layout._write_fd = write_fd
    else:  # the block renamed into place, nothing after that
        real_atomic = child_layout.write_file_atomic

        def write_file_atomic(directory, name, data):
            real_atomic(directory, name, data)
            if name.endswith(child_layout.BLOCK_SUFFIX):
                blocks.append(1)
                if len(blocks) == 2:
                    kill()

        child_layout.write_file_atomic = write_file_atomic
    cache = BlockCache(Path(root), 64 * MIB, MIB, readahead_max_bytes=0)
    remote = FakeRemote(2 * MIB)
    with cache.open("k", remote.size, remote) as f:
        f.read(0, 10)
        f.read(MIB, 10)
    raise AssertionError("not killed")


@pytest.mark.parametrize("where", ["before_rename", "after_rename"])
def test_sigkill_while_storing_then_a_lone_start_recounts_the_ledger(cache_root, where):
    other = FakeRemote(3 * MIB, seed=5)
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        with cache.open("other", other.size, other) as f:
            f.read(0, other.size)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_die_while_storing, args=(str(cache_root), where))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    blocks = len([p for p in files_under(cache_root, ".blk") if not p.name.startswith(layout.TEMP_PREFIX)])
    if where == "before_rename":
        assert blocks == 4  # 3 of "other", block 0 of "k"; block 1's charge is counted but never landed
        assert ledger_bytes(cache_root) == _disk(cache_root) + CHARGE
    else:
        assert blocks == 5
        assert ledger_bytes(cache_root) == _disk(cache_root) == 5 * CHARGE
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:  # alone on the directory: recounts
        assert ledger_bytes(cache_root) == _disk(cache_root) == cache.stats().used_bytes
        assert not [p for p in files_under(cache_root) if p.name.startswith(layout.TEMP_PREFIX)]


def test_a_start_while_others_use_the_dir_keeps_the_ledger_and_a_lone_one_recounts(cache_root):
    remote = FakeRemote(2 * MIB)
    first = BlockCache(cache_root, 64 * MIB, MIB)
    try:
        with first.open("x", remote.size, remote) as f:
            f.read(0, remote.size)
        true_total = 2 * CHARGE
        assert ledger_bytes(cache_root) == true_total
        (cache_root / USAGE_NAME).write_bytes(encode(true_total + 7 * CHARGE))  # drift
        with BlockCache(cache_root, 64 * MIB, MIB):
            # not alone: `first` may be writing, so a scan is not the truth; the ledger is kept
            assert ledger_bytes(cache_root) == true_total + 7 * CHARGE
    finally:
        first.close()
    with BlockCache(cache_root, 64 * MIB, MIB):
        assert ledger_bytes(cache_root) == true_total


def test_a_missing_or_garbled_ledger_is_recounted(cache_root):
    cap = 4 * CHARGE
    with BlockCache(cache_root, cap, MIB, readahead_max_bytes=0) as cache, \
            BlockCache(cache_root, cap, MIB, readahead_max_bytes=0) as peer:
        remotes = [FakeRemote(MIB, seed=n) for n in range(6)]
        for n in range(3):
            with cache.open(f"g{n}", MIB, remotes[n]) as f:
                f.read(0, 1)
        (cache_root / USAGE_NAME).write_bytes(b"garbage")
        with peer.open("g3", MIB, remotes[3]) as f:
            f.read(0, 1)
        assert ledger_bytes(cache_root) == _disk(cache_root) == 4 * CHARGE
        (cache_root / USAGE_NAME).unlink()
        with cache.open("g4", MIB, remotes[4]) as f:  # full: evicts one
            f.read(0, 1)
        assert ledger_bytes(cache_root) == _disk(cache_root) == 4 * CHARGE
        with peer.open("g5", MIB, remotes[5]) as f:  # `peer` re-opens the new file
            f.read(0, 1)
        assert ledger_bytes(cache_root) == _disk(cache_root) == 4 * CHARGE


def test_prune_and_clear_commands_keep_the_ledger(cache_root):
    with BlockCache(cache_root, 64 * MIB, MIB) as cache:
        remote = FakeRemote(5 * MIB)
        with cache.open("p", remote.size, remote) as f:
            f.read(0, remote.size)
        prune_cache(cache_root, 2 * CHARGE)  # while the cache is open: subtracts what it removed
        assert ledger_bytes(cache_root) == _disk(cache_root) == 2 * CHARGE
        with cache.open("p", remote.size, remote) as f:  # vanished blocks: fetched again, counted again
            assert f.read(0, remote.size) == remote.content(0, remote.size)
        assert ledger_bytes(cache_root) == _disk(cache_root) == 5 * CHARGE
        cache.prune(CHARGE)
        assert ledger_bytes(cache_root) == _disk(cache_root) == CHARGE
        clear_cache(cache_root)
        assert ledger_bytes(cache_root) == _disk(cache_root) == 0
    (cache_root / USAGE_NAME).write_bytes(encode(123 * CHARGE))
    prune_cache(cache_root, 64 * MIB)  # alone: sets what is on disk
    assert ledger_bytes(cache_root) == 0


def test_ledger_records():
    from wfs.cache.ledger import decode

    assert decode(encode(12345)) == 12345
    assert decode(encode(-5)) == 0
    assert decode(b"") is None
    assert decode(encode(7)[:-1]) is None
    assert decode(encode(7).replace(b"7", b"x")) is None


def test_an_unusable_ledger_falls_back_to_this_process_s_own_cap(cache_root, caplog):
    (cache_root).mkdir(parents=True)
    (cache_root / USAGE_NAME).mkdir()  # cannot be opened for writing
    cap = 3 * CHARGE
    with BlockCache(cache_root, cap, MIB, readahead_max_bytes=0) as cache:
        remotes = [FakeRemote(MIB, seed=n) for n in range(5)]
        for n, remote in enumerate(remotes):
            with cache.open(f"u{n}", MIB, remote) as f:
                assert f.read(0, MIB) == remote.content(0, MIB)
            assert _disk(cache_root) <= cap
        assert _disk(cache_root) == cache.stats().used_bytes == cap
    assert any("usage ledger" in r.getMessage() for r in caplog.records)
