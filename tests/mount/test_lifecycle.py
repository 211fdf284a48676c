"""Lifecycle: signals and ``wfs unmount`` with reads in flight, stale mounts, start-up failures."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time

import pytest

from helpers import run_wfs, wait_for, wfs_env
from wfs.testing.content import Generated, generated_bytes

KEY = ("alice", "lifecycle", "r1")
FILES = {"big.bin": Generated(size_bytes=20 << 20, seed=77), "small.txt": b"small\n"}


@pytest.fixture
def run(server):
    if server.store.file(*KEY, "small.txt") is None:
        server.add_run(*KEY, state="finished", files=FILES)
    return KEY


def _read_in_thread(path, offset, size):
    result: dict = {}

    def work():
        try:
            with open(path, "rb", buffering=0) as handle:
                handle.seek(offset)
                result["data"] = handle.read(size)
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly_after_answering_the_read_in_flight(server, mount_wfs, run, signum):
    mount = mount_wfs()
    path = mount.path.joinpath(*run, "big.bin")
    assert os.stat(path).st_size == 20 << 20
    server.reset_stats()
    server.set_faults(latency_seconds=1.0, targets="storage")
    offset = 9 << 20
    thread, result = _read_in_thread(path, offset, 4096)
    wait_for(lambda: server.stats()["storage_requests"] >= 1, timeout=10, what="the read to reach storage")
    mount.proc.send_signal(signum)
    thread.join(timeout=20)
    assert not thread.is_alive(), "the read in flight was never answered"
    assert result.get("data") == generated_bytes(77, offset, offset + 4096), result
    assert mount.proc.wait(timeout=20) == 0
    wait_for(lambda: not os.path.ismount(mount.path), timeout=10, what="the unmount")
    os.stat(mount.path)  # no stale mount left behind
    assert "unmounting" in mount.log()


def test_wfs_unmount_refuses_a_busy_mount_in_one_line_then_unmounts(server, mount_wfs, run):
    mount = mount_wfs()
    handle = open(mount.path.joinpath(*run, "small.txt"), "rb")
    try:
        busy = run_wfs(["unmount", str(mount.path)], mount.env)
        assert busy.returncode != 0 and "busy" in busy.stderr
        assert len(busy.stderr.strip().splitlines()) == 1 and "Traceback" not in busy.stderr
        assert handle.read() == b"small\n"  # still served
    finally:
        handle.close()
    done = run_wfs(["unmount", str(mount.path)], mount.env)
    assert done.returncode == 0, done.stderr
    assert mount.proc.wait(timeout=20) == 0
    assert not os.path.ismount(mount.path)


def _stale(path) -> bool:
    """What a user sees of a dead mount: listing it fails (stat may pass on cached attributes)."""
    try:
        os.listdir(path)
    except OSError as exc:
        return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def test_sigkilled_daemon_leaves_a_stale_mount_the_next_mount_clears(server, mount_wfs, run, tmp_path):
    first = mount_wfs()
    assert (first.path.joinpath(*run, "small.txt")).read_bytes() == b"small\n"
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    wait_for(lambda: _stale(first.path), timeout=10, what="the dead daemon's mount to go stale")
    args = ["mount", str(first.path), "--cache-dir", str(tmp_path / "cache"), "--log-file", str(tmp_path / "again.log")]
    result = run_wfs(args, first.env)
    try:
        assert result.returncode == 0, result.stderr
        assert (first.path.joinpath(*run, "small.txt")).read_bytes() == b"small\n"
        assert "clearing a stale mount" in (tmp_path / "again.log").read_text()
    finally:
        run_wfs(["unmount", str(first.path)], first.env)
    wait_for(lambda: not os.path.ismount(first.path), timeout=10, what="the unmount")


# ---------------------------------------------------------------------- start-up failures
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_line_failure(result, *needles, foreground=False):
    """Background: stderr is one line. Foreground also logs to stderr: one ``wfs:`` line then."""
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    if foreground:
        err = "\n".join(line for line in err.splitlines() if line.startswith("wfs: "))
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("foreground", [False, True])
def test_unreachable_host_is_named_in_one_line(server, tmp_path, foreground):
    (tmp_path / "m").mkdir()
    env = wfs_env(tmp_path, server)
    host = f"127.0.0.1:{_free_port()}"
    env["WANDB_BASE_URL"] = f"http://{host}"
    started = time.monotonic()
    args = ["mount", str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"), "--backoff", "0.1"]
    result = run_wfs(args + (["-f"] if foreground else []), env, timeout=60)
    _one_line_failure(result, host, "cannot reach", foreground=foreground)
    assert time.monotonic() - started < 20
    assert not os.path.ismount(tmp_path / "m")


def test_missing_fuse_is_one_line(server, tmp_path):
    (tmp_path / "m").mkdir()
    env = wfs_env(tmp_path, server)
    env["PATH"] = str(tmp_path / "empty-bin")  # no fusermount3 to be found
    result = run_wfs(["mount", str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c")], env)
    _one_line_failure(result, "FUSE", "fusermount3")


@pytest.mark.parametrize("case", ["missing", "file", "busy"])
def test_bad_mountpoints_are_one_line(server, mount_wfs, tmp_path, case):
    env = wfs_env(tmp_path, server)
    if case == "missing":
        target, needle = tmp_path / "nope", "does not exist"
    elif case == "file":
        target, needle = tmp_path / "afile", "not a directory"
        target.write_text("x")
    else:
        target, needle = mount_wfs().path, "busy"
    result = run_wfs(["mount", str(target), "--cache-dir", str(tmp_path / "c2")], env)
    _one_line_failure(result, needle)


def test_bad_key_is_one_line_and_never_echoed(server, tmp_path):
    (tmp_path / "m").mkdir()
    wrong = "wrong-" + "z" * 40
    env = wfs_env(tmp_path, server, api_key=wrong)
    for extra in ([], ["-f"]):
        result = run_wfs(["mount", str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"), *extra], env)
        _one_line_failure(result, "key", foreground=bool(extra))
        assert wrong not in result.stderr + result.stdout


def test_offline_mount_serves_stored_listings_and_cached_bytes(server, mount_wfs, run, tmp_path):
    cache = tmp_path / "shared-cache"
    online = mount_wfs(cache_dir=cache, name="online")
    assert sorted(os.listdir(online.path.joinpath(*run))) == sorted(FILES)  # stored: a finished run
    small = online.path.joinpath(*run, "small.txt")
    assert small.read_bytes() == b"small\n"
    assert run_wfs(["unmount", str(online.path)], online.env).returncode == 0
    online.proc.wait(timeout=20)
    server.reset_stats()
    offline = mount_wfs("--offline", cache_dir=cache, name="offline")
    entity, project, run_id = run
    assert entity in os.listdir(offline.path)
    assert project in os.listdir(offline.path / entity)
    assert run_id in os.listdir(offline.path / entity / project)
    assert sorted(os.listdir(offline.path.joinpath(*run))) == sorted(FILES)
    assert offline.path.joinpath(*run, "small.txt").read_bytes() == b"small\n"
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        offline.path.joinpath(*run, "big.bin").read_bytes()
    assert info.value.errno == errno.EIO and time.monotonic() - started < 2
    stats = server.stats()
    assert stats["graphql_requests"] == 0 and stats["storage_requests"] == 0 and stats["file_url_requests"] == 0


def test_offline_mount_shows_a_running_run_as_last_listed(server, mount_wfs, tmp_path):
    cache = tmp_path / "shared-cache"
    online = mount_wfs(cache_dir=cache, name="online")
    assert os.listdir(online.path / "alice/proj/live1") == ["output.log"]
    assert (online.path / "alice/proj/live1/output.log").read_bytes() == b"line 1\n"
    assert run_wfs(["unmount", str(online.path)], online.env).returncode == 0
    online.proc.wait(timeout=20)
    server.reset_stats()
    offline = mount_wfs("--offline", cache_dir=cache, name="offline")
    assert "live1" in os.listdir(offline.path / "alice/proj")
    assert os.listdir(offline.path / "alice/proj/live1") == ["output.log"]
    assert (offline.path / "alice/proj/live1/output.log").read_bytes() == b"line 1\n"
    assert os.getxattr(offline.path / "alice/proj/live1/output.log", "user.wandb.run_state") == b"running"
    assert server.stats()["graphql_requests"] == 0


def test_a_stored_running_run_is_asked_again_when_online(server, mount_wfs, tmp_path):
    cache = tmp_path / "shared-cache"
    first = mount_wfs(cache_dir=cache, name="first")
    assert os.listdir(first.path / "alice/proj/live1") == ["output.log"]
    assert run_wfs(["unmount", str(first.path)], first.env).returncode == 0
    first.proc.wait(timeout=20)
    grown = b"line 1\nline 2\n"
    server.put_file("alice", "proj", "live1", "output.log", grown)
    try:
        again = mount_wfs(cache_dir=cache, name="again")
        assert os.listdir(again.path / "alice/proj/live1") == ["output.log"]
        assert (again.path / "alice/proj/live1/output.log").read_bytes() == grown
    finally:
        server.put_file("alice", "proj", "live1", "output.log", b"line 1\n")
