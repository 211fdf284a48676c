"""The block cache seen through the mount: bytes fetched, cap, persistence, crashes, versions."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading

from helpers import CACHE_RUN_FILES, MIB, SMALL_FILES_RUN, run_wfs, wait_for
from wfs.testing.content import generated_bytes

BLOCK = 8 * MIB


def served(server) -> int:
    return server.stats()["bytes_served"]


def drop_page_cache(path) -> None:
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def file_sha(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha(value) -> str:
    digest = hashlib.sha256()
    for start in range(0, value.size_bytes, 16 * MIB):
        digest.update(value.read(start, min(start + 16 * MIB, value.size_bytes)))
    return digest.hexdigest()


def du_bytes(root) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def test_head_of_a_1gib_file_fetches_at_most_one_block(server, mounted):
    path = mounted.path / "alice/proj/run1/big/huge.bin"
    os.stat(path)
    server.reset_stats()
    out = subprocess.run(["head", "-c", "4096", str(path)], capture_output=True, timeout=30).stdout
    assert out == generated_bytes(11, 0, 4096)
    assert served(server) <= BLOCK


def test_1mib_read_in_the_middle_fetches_at_most_two_blocks(server, mounted):
    path = mounted.path / "alice/proj/run1/big/huge.bin"
    offset = 512 * MIB - 300 * 1024  # straddles a block boundary
    os.stat(path)
    server.reset_stats()
    with open(path, "rb", buffering=0) as handle:
        data = os.pread(handle.fileno(), MIB, offset)
    assert data == generated_bytes(11, offset, offset + MIB)
    assert served(server) <= 2 * BLOCK


def test_eight_concurrent_readers_fetch_a_cold_file_once(server, mounted):
    path = mounted.path / "alice/cache/c1/f200.bin"
    size = CACHE_RUN_FILES["f200.bin"].size_bytes
    os.stat(path)
    server.reset_stats()
    digests, barrier = [], threading.Barrier(8)

    def reader():
        barrier.wait(10)
        digests.append(file_sha(path))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(digests) == 8 and len(set(digests)) == 1
    assert digests[0] == expected_sha(CACHE_RUN_FILES["f200.bin"])
    assert served(server) <= 1.25 * size, served(server) / size


def test_cache_stays_under_cap_plus_one_block_while_reading_200mb(server, mount_wfs):
    cap = 64 * MIB
    mount = mount_wfs("--cache-max-size", "64M")
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(du_bytes(mount.cache_dir))
            done.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for i in range(10):
            name = f"parts/p{i}.bin"
            assert file_sha(mount.path / "alice/cache/c1" / name) == expected_sha(CACHE_RUN_FILES[name])
    finally:
        done.set()
        sampler.join(10)
    samples.append(du_bytes(mount.cache_dir))
    assert len(samples) > 10
    assert max(samples) <= cap + BLOCK, max(samples) / MIB


def test_two_mounts_sharing_a_cache_dir_stay_under_one_cap(server, mount_wfs, tmp_path):
    cap = 64 * MIB
    cache_dir = tmp_path / "shared-cache"
    mounts = [mount_wfs("--cache-max-size", "64M", name=name, cache_dir=cache_dir) for name in ("s1", "s2")]
    samples, done, digests = [], threading.Event(), {}

    def sample():
        while not done.is_set():
            samples.append(du_bytes(cache_dir))
            done.wait(0.01)

    def read(mount, names):
        for name in names:
            digests[name] = file_sha(mount.path / "alice/cache/c1" / name)

    sampler = threading.Thread(target=sample)
    sampler.start()
    readers = [threading.Thread(target=read, args=(mount, [f"parts/p{i}.bin" for i in range(first, 10, 2)]))
               for mount, first in zip(mounts, (0, 1))]
    try:
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(180)
    finally:
        done.set()
        sampler.join(10)
    samples.append(du_bytes(cache_dir))
    assert digests == {name: expected_sha(CACHE_RUN_FILES[name]) for name in digests} and len(digests) == 10
    assert len(samples) > 10
    assert max(samples) <= cap + BLOCK, max(samples) / MIB
    # Both mounts' status shows the one directory total, which the cap bounds (read-ahead may
    # still be landing, so ask until the two agree).
    def shared_total():
        totals = {mount.status()["cache"]["dir_used_bytes"] for mount in mounts}
        return totals.pop() if len(totals) == 1 else None

    assert 0 < wait_for(shared_total, timeout=20, what="one directory total in both statuses") <= cap


def test_remount_rereads_finished_run_with_zero_bytes_fetched(server, mount_wfs):
    first = mount_wfs(name="a")
    paths = ["alice/proj/run1/config.yaml", "alice/proj/run1/ckpt/model.bin", "alice/cache/c1/parts/p3.bin"]
    digests = [file_sha(first.path / p) for p in paths]
    subprocess.run(["fusermount3", "-u", str(first.path)], check=True, timeout=30)
    first.proc.wait(timeout=30)
    second = mount_wfs(name="b", cache_dir=first.cache_dir)
    server.reset_stats()
    assert [file_sha(second.path / p) for p in paths] == digests
    assert served(server) == 0
    assert server.stats()["storage_requests"] == 0


def test_sigkill_mid_download_then_remount_serves_whole_file(server, mount_wfs):
    name = "parts/p7.bin"
    first = mount_wfs(name="k1")
    path = first.path / "alice/cache/c1" / name
    server.set_faults(latency_seconds=0.05, targets=["storage"])
    reader = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: served(server) > 0, timeout=30, what="download to start")
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    reader.wait(timeout=30)  # the kernel answers the reader once the daemon is gone
    server.set_faults()
    subprocess.run(["fusermount3", "-uz", str(first.path)], timeout=30)
    second = mount_wfs(name="k2", cache_dir=first.cache_dir)
    assert file_sha(second.path / "alice/cache/c1" / name) == expected_sha(CACHE_RUN_FILES[name])


def test_changed_upstream_file_is_a_new_version_never_the_old_bytes(server, mount_wfs):
    mount = mount_wfs("--running-ttl", "1")
    path = mount.path / "alice/proj/live1/output.log"
    old = b"A" * 5000
    new = b"B" * 5000  # same size: only the version (md5, updatedAt) tells them apart
    try:
        server.put_file("alice", "proj", "live1", "output.log", old)
        wait_for(lambda: path.read_bytes() == old, timeout=15, what="old version")
        server.put_file("alice", "proj", "live1", "output.log", new)
        wait_for(lambda: path.read_bytes() != old, timeout=15, what="new version")
        assert path.read_bytes() == new
    finally:
        server.put_file("alice", "proj", "live1", "output.log", b"line 1\n")


def test_folder_walk_prefetches_siblings_in_parallel(server, mounted):
    folder = mounted.path / "alice/cache/small/media/images"
    names = sorted(os.listdir(folder))
    server.reset_stats()
    for name in names[:3]:
        (folder / name).read_bytes()
    # After two forward opens the next files are fetched before they are opened.
    wait_for(
        lambda: server.stats()["storage_requests"] >= 3 + 8,
        timeout=15,
        what="siblings prefetched",
    )
    fetched_before = server.stats()["storage_requests"]
    for name in names[3:]:
        assert (folder / name).read_bytes() == SMALL_FILES_RUN[f"media/images/{name}"]
    # Every file fetched exactly once in all.
    assert server.stats()["storage_requests"] == len(names) >= fetched_before


def test_cache_commands_work_on_a_cache_dir(server, mount_wfs, tmp_path):
    mount = mount_wfs(name="c")
    (mount.path / "alice/cache/c1/parts/p1.bin").read_bytes()
    subprocess.run(["fusermount3", "-u", str(mount.path)], check=True, timeout=30)
    mount.proc.wait(timeout=30)
    env = mount.env
    stats = run_wfs(["cache", "stats", "--cache-dir", str(mount.cache_dir)], env)
    assert stats.returncode == 0 and "objects:    1" in stats.stdout, stats.stdout + stats.stderr
    prune = run_wfs(["cache", "prune", "--cache-dir", str(mount.cache_dir), "--max-size", "8M"], env)
    assert prune.returncode == 0, prune.stderr
    assert du_bytes(mount.cache_dir / "objects") <= 8 * MIB + 64 * 1024
    clear = run_wfs(["cache", "clear", "--cache-dir", str(mount.cache_dir)], env)
    assert clear.returncode == 0
    assert du_bytes(mount.cache_dir / "objects") == 0
