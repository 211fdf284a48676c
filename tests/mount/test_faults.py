"""Fault injection through a real mount: 5xx, 429, cut bodies, an outage, expired URLs, a slow server.

Every budget is small and fixed (retries, backoff, timeouts via hidden CLI
flags) and every fault sequence is seeded, so these runs are repeatable and
quick. Tests that stop the server start it again in ``finally`` on the same
ports.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time

import pytest

from helpers import API_KEY, copy_tree_hashes, sha256, source_bytes, wait_for
from wfs.testing.content import Generated

MIB = 1 << 20
FAST = ["--retries", "6", "--backoff", "0.05", "--backoff-max", "0.5", "--offline-cooldown", "0.5"]

FAULT_RUN = ("alice", "faults", "r60")
FAULT_FILES: dict[str, object] = {
    **{f"logs/part_{i:02d}.txt": (b"part %d\n" % i) * (50 + 97 * i) for i in range(40)},
    **{f"media/img_{i:02d}.bin": Generated(size_bytes=3000 + 40_000 * i, seed=100 + i) for i in range(19)},
    "ckpt/model.bin": Generated(size_bytes=64 * MIB, seed=42),
}
assert len(FAULT_FILES) == 60

OUTAGE_RUN = ("alice", "faults", "outage")
OUTAGE_FILES = {
    "cached.txt": b"read before the outage\n" * 100,
    "later.bin": Generated(size_bytes=300_000, seed=5),
    "sub/deeper.txt": b"deeper\n",
}


def ensure_run(server, key, files) -> None:
    entity, project, run_id = key
    if server.store.file(entity, project, run_id, next(iter(files))) is None:
        server.add_run(entity, project, run_id, state="finished", files=files)


def expected_hashes(files) -> dict[str, str]:
    return {name: sha256(source_bytes(value)) for name, value in files.items()}


def drop_pages(path) -> None:
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def test_cp_r_under_500s_429s_and_cut_bodies_is_byte_identical(server, mount_wfs, tmp_path):
    ensure_run(server, FAULT_RUN, FAULT_FILES)
    mount = mount_wfs(*FAST)
    server.set_faults(error_rate=0.10, rate_limit_rate=0.05, truncate_rate=0.05, retry_after_seconds=1, seed=2024)
    dest = tmp_path / "copy"
    started = time.monotonic()
    subprocess.run(["cp", "-r", str(mount.path.joinpath(*FAULT_RUN)), str(dest)], check=True, timeout=120)
    elapsed = time.monotonic() - started
    server.set_faults()
    assert copy_tree_hashes(dest) == expected_hashes(FAULT_FILES)
    statuses = server.stats()["status_counts"]
    assert statuses.get(500, 0) > 0 and statuses.get(429, 0) > 0, statuses
    log = mount.log()
    assert "resuming at byte" in log, "no cut body was resumed"
    assert "retrying" in log
    assert elapsed < 90


def test_outage_serves_what_is_known_fails_fast_and_recovers(server, mount_wfs):
    ensure_run(server, OUTAGE_RUN, OUTAGE_FILES)
    # --dir-cache-time 0: every listing below is expired when the server goes away, so
    # what the mount shows during the outage is the stale-on-outage path, not a fresh cache.
    mount = mount_wfs(*FAST, "--timeout", "20", "--dir-cache-time", "0")
    run = mount.path.joinpath(*OUTAGE_RUN)
    cached = run / "cached.txt"
    assert cached.read_bytes() == OUTAGE_FILES["cached.txt"]
    listings = {p: sorted(os.listdir(p)) for p in (mount.path / "alice", run.parent, run, run / "sub")}
    later = run / "later.bin"
    assert os.stat(later).st_size == 300_000
    server.stop()
    try:
        drop_pages(cached)
        assert cached.read_bytes() == OUTAGE_FILES["cached.txt"]
        for path, names in listings.items():
            assert sorted(os.listdir(path)) == names, path
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            later.read_bytes()
        assert info.value.errno == errno.EIO
        assert time.monotonic() - started < 30
        started = time.monotonic()  # the second attempt meets the circuit breaker (or its probe)
        with pytest.raises(OSError):
            later.read_bytes()
        assert time.monotonic() - started < 10
        assert mount.proc.poll() is None and os.path.ismount(mount.path)
        assert sorted(os.listdir(run)) == listings[run]
        assert _status(mount)["offline"] is True
    finally:
        server.start()
    wait_for(lambda: _reads(later, OUTAGE_FILES["later.bin"]), timeout=20, what="the read after the restart")
    wait_for(lambda: os.listdir(run.parent) and _status(mount)["offline"] is False, timeout=20, what="back online")
    log = mount.log()
    assert "unreachable" in log and "later.bin" in log


def _status(mount) -> dict:
    return json.loads((mount.path / ".wfs/status.json").read_text())


def _reads(path, expected) -> bool:
    try:
        return path.read_bytes() == source_bytes(expected)
    except OSError:
        return False


def test_expired_signed_url_is_refreshed_by_exact_name_when_the_url_route_fails(server, mount_wfs):
    key = ("alice", "faults", "expiring")
    files = {"a.bin": Generated(size_bytes=5000, seed=9), "b.txt": b"bee\n"}
    ensure_run(server, key, files)
    mount = mount_wfs(*FAST)
    old_ttl = server.url_ttl_seconds
    server.url_ttl_seconds = 3
    try:
        run = mount.path.joinpath(*key)
        listed_at = time.time()
        assert sorted(os.listdir(run)) == ["a.bin", "b.txt"]  # the listing carries 3 s directUrls
        wait_for(lambda: time.time() > listed_at + 4.2, timeout=10, what="the signed URLs to expire")
        server.set_faults(error_rate=1.0, targets="files")  # the url -> redirect route is broken
        server.reset_stats()
        assert (run / "a.bin").read_bytes() == source_bytes(files["a.bin"])
        stats = server.stats()
        assert stats["status_counts"].get(403, 0) >= 1  # storage said the URL expired
        assert stats["graphql_operations"].get("RunFiles", 0) >= 1  # the exact-name look-up
    finally:
        server.url_ttl_seconds = old_ttl
        server.set_faults()


def test_a_server_slower_than_the_timeout_gives_eio_within_the_bound(server, mount_wfs):
    key = ("alice", "faults", "slow")
    files = {"slow.bin": Generated(size_bytes=10_000, seed=3)}
    ensure_run(server, key, files)
    mount = mount_wfs("--retries", "2", "--backoff", "0.05", "--timeout", "2")
    path = mount.path.joinpath(*key, "slow.bin")
    assert os.stat(path).st_size == 10_000
    server.set_faults(latency_seconds=4, targets="storage")
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            path.read_bytes()
        assert info.value.errno == errno.EIO
        assert time.monotonic() - started < 3.9
    finally:
        server.set_faults()
    wait_for(lambda: _reads(path, files["slow.bin"]), timeout=20, what="the read once the server is fast")


def test_lost_access_on_a_listing_is_eacces_and_logged_once(server, mount_wfs):
    revoked = "wfs-revoked-key-" + "0123456789abcdef" * 3
    server.api_keys[revoked] = "alice"
    try:
        mount = mount_wfs(api_key=revoked, name="revoked")
        del server.api_keys[revoked]
        for _ in range(3):
            with pytest.raises(PermissionError):
                os.listdir(mount.path / "alice")
    finally:
        server.api_keys.pop(revoked, None)
    lines = [line for line in mount.log().splitlines() if "EACCES" in line]
    assert len(lines) == 1, lines
    assert "/alice" in lines[0] and "401" in lines[0]
    assert API_KEY not in mount.log() and revoked not in mount.log()
