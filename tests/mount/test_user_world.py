"""Fitting the user's world: fstab helper, prefetch, status, xattrs, the Python API."""

from __future__ import annotations

import datetime
import errno
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

import wfs
from helpers import RUN1_FILES, copy_tree_hashes, run_wfs, sha256, source_bytes, wait_for, wfs_env
from wfs.mount_helper import translate
from wfs.mounting import MountError
from wfs.testing.content import md5_b64_of

BIN = Path(sys.executable).parent


def test_fstab_style_mount_through_the_helper(server, tmp_path):
    mountpoint = tmp_path / "fstab"
    mountpoint.mkdir()
    env = wfs_env(tmp_path, server)
    options = f"_netdev,noauto,cache_max_size=20M,cache_dir={tmp_path / 'c'},log_file={tmp_path / 'w.log'}"
    result = subprocess.run(
        [str(BIN / "mount.wfs"), "alice/proj", str(mountpoint), "-o", options],
        env=env, capture_output=True, text=True, timeout=60,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert {"run1", "run2", "live1"} <= set(os.listdir(mountpoint))
        status = json.loads((mountpoint / ".wfs/status.json").read_text())
        assert status["subpath"] == "alice/proj"
        assert status["cache"]["max_bytes"] == 20 * 2**20
    finally:
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], timeout=30)


def test_helper_translates_mount_options():
    args, env = translate(["wandb", "/mnt/w", "-o", "rw,_netdev,allow_other,dir_cache_time=30,netrc=/r/.netrc,max_read=131072", "-v"])
    assert args == ["mount", "/mnt/w", "--allow-other", "--dir-cache-time", "30", "-o", "max_read=131072"]
    assert env == {"NETRC": "/r/.netrc"}


def test_prefetch_then_copy_fetches_zero_bytes(server, mount_wfs, tmp_path):
    mount = mount_wfs()
    run = mount.path / "alice/proj/run1"
    result = run_wfs(["prefetch", str(run), "--quiet"], mount.env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "prefetched" in result.stderr
    server.reset_stats()
    subprocess.run(["cp", "-r", str(run), str(tmp_path / "copy")], check=True, timeout=120)
    assert server.stats()["bytes_served"] == 0
    copied = copy_tree_hashes(tmp_path / "copy")
    assert copied["config.yaml"] == sha256(source_bytes(RUN1_FILES["config.yaml"]))
    assert len(copied) == len(RUN1_FILES)


def test_prefetch_progress_in_a_terminal_shows_files_and_bytes(server, mount_wfs):
    mount = mount_wfs()
    pid, fd = pty.fork()
    if pid == 0:  # child: run the CLI on the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "wfs", "prefetch", str(mount.path / "alice/proj/run2")], mount.env)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "1/1 files" in text and "prefetch" in text and "B" in text


def test_prefetch_outside_a_mount_fails_clearly(server, tmp_path):
    result = run_wfs(["prefetch", str(tmp_path)], wfs_env(tmp_path, server))
    assert result.returncode != 0 and "not inside a wfs mount" in result.stderr and "Traceback" not in result.stderr


def test_status_figures_match_the_server_counters(server, mounted):
    before = json.loads(run_wfs(["status", str(mounted.path), "--json"], mounted.env).stdout)
    server.reset_stats()
    (mounted.path / "alice/proj/run1/output.log").read_bytes()
    os.listdir(mounted.path / "alice/proj/run2")
    after = json.loads(run_wfs(["status", str(mounted.path), "--json"], mounted.env).stdout)
    stats = server.stats()
    assert after["requests"]["graphql_requests"] - before["requests"]["graphql_requests"] == stats["graphql_requests"]
    assert after["requests"]["byte_requests"] - before["requests"]["byte_requests"] == stats["storage_requests"]
    assert after["requests"]["bytes_received"] - before["requests"]["bytes_received"] == stats["bytes_served"]
    human = run_wfs(["status"], mounted.env)
    assert human.returncode == 0 and str(mounted.path) in human.stdout and "hit rate" in human.stdout
    assert ".wfs" not in os.listdir(mounted.path)


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def test_xattrs_match_the_wandb_metadata(server, mounted):
    path = mounted.path / "alice/proj/run1/config.yaml"
    record = server.store.file("alice", "proj", "run1", "config.yaml")
    assert os.getxattr(path, "user.wandb.md5").decode() == record.content.md5_b64() == md5_b64_of(RUN1_FILES["config.yaml"])
    assert os.getxattr(path, "user.wandb.updated_at").decode() == _iso(record.updated_at)
    assert os.getxattr(path, "user.wandb.run_state").decode() == "finished"
    assert os.getxattr(path, "user.wfs.cached").decode() == "none"
    path.read_bytes()
    assert os.getxattr(path, "user.wfs.cached").decode() == "full"
    assert "user.wandb.md5" in os.listxattr(path)
    run = mounted.path / "alice/proj/run1"
    assert os.getxattr(run, "user.wandb.display_name").decode() == "brisk-sun-1"
    assert os.getxattr(run, "user.wandb.state").decode() == "finished"
    with pytest.raises(OSError):
        os.getxattr(path, "user.wandb.direct_url")
    assert not any("url" in name for name in os.listxattr(path))


def test_ls_l_asks_for_acls_and_labels_once_not_per_file(mounted):
    folder = mounted.path / "alice/big/r10k/logs"
    with pytest.raises(OSError) as err:
        os.getxattr(folder / "part_0001.txt", "system.posix_acl_access")
    assert err.value.errno == errno.ENOTSUP
    with pytest.raises(OSError) as err:
        os.getxattr(folder / "part_0001.txt", "security.selinux", follow_symlinks=False)
    assert err.value.errno == errno.ENOTSUP
    before = mounted.kernel_requests("getxattr")
    listing = subprocess.run(["ls", "-l", str(folder)], capture_output=True, text=True, timeout=60, check=True)
    assert listing.stdout.count("part_") == 499
    # ENOTSUP tells ls the whole mount has no ACLs or labels; ENODATA would cost
    # two round trips per file (998 here).
    assert mounted.kernel_requests("getxattr") - before <= 4


def test_python_api_mounts_and_unmounts_even_when_the_block_raises(server, tmp_path, monkeypatch):
    for key, value in wfs_env(tmp_path, server).items():
        monkeypatch.setenv(key, value)
    target = tmp_path / "api"
    with pytest.raises(RuntimeError):
        with wfs.mount(target, "alice/proj/run2", cache_dir=tmp_path / "c") as root:
            assert (root / "x.txt").read_bytes() == b"x"
            raise RuntimeError("boom")
    wait_for(lambda: not os.path.ismount(target), timeout=15, what="unmount after the block")
    with pytest.raises(MountError, match="not found"):
        with wfs.mount(target, "alice/no-such-project", cache_dir=tmp_path / "c"):
            pass


def test_debug_log_has_one_line_per_request_with_timing_and_no_secrets(server, mounted):
    (mounted.path / "alice/proj/run2/x.txt").read_bytes()
    log = wait_for(lambda: "-> 206 in" in mounted.log() and mounted.log(), what="request lines in the log")
    lines = [line for line in log.splitlines() if " ms" in line and "wfs.client.http" in line]
    assert any("POST http://127.0.0.1" in line and "/graphql -> 200 in" in line for line in lines)
    assert any("GET http://127.0.0.1" in line and "-> 206 in" in line and "(Range bytes=0-0)" in line for line in lines)
    assert not any("sig=" in line or "expires=" in line for line in lines)
    from helpers import API_KEY

    assert API_KEY not in log


def test_status_shows_requests_in_flight(server, mount_wfs):
    mount = mount_wfs("--read-only")
    path = mount.path / "alice/cache/c1/parts/p5.bin"
    os.stat(path)
    server.set_faults(latency_seconds=1.0, targets=["storage"])
    reader = subprocess.Popen(["head", "-c", "100", str(path)], stdout=subprocess.DEVNULL)
    try:
        busy = wait_for(
            lambda: json.loads((mount.path / ".wfs/status.json").read_text())["requests"]["in_flight"] >= 1,
            timeout=15,
            what="a read in flight",
        )
        assert busy
    finally:
        reader.wait(timeout=30)
        server.set_faults()
    wait_for(lambda: json.loads((mount.path / ".wfs/status.json").read_text())["requests"]["in_flight"] == 0,
             timeout=15, what="no request in flight")


def test_rclone_style_options_reach_the_mount(server, tmp_path):
    mountpoint = tmp_path / "opts"
    mountpoint.mkdir()
    env = wfs_env(tmp_path, server)
    result = run_wfs(
        ["mount", str(mountpoint), "alice/proj", "--cache-dir", str(tmp_path / "c"), "--allow-other",
         "--daemon-wait", "30", "--dir-cache-time", "120", "-o", "noatime", "--read-only"],
        env,
    )
    try:
        assert result.returncode == 0, result.stderr
        line = next(l for l in open("/proc/self/mounts") if f" {mountpoint} " in l)
        assert "fuse.wfs" in line and "allow_other" in line and "ro," in line and "noatime" in line
        assert "run1" in os.listdir(mountpoint)
    finally:
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], timeout=30)


def test_a_fuse_option_the_kernel_rejects_gives_a_clear_error(server, tmp_path):
    mountpoint = tmp_path / "bad"
    mountpoint.mkdir()
    result = run_wfs(["mount", str(mountpoint), "--cache-dir", str(tmp_path / "c"), "-o", "max_read=131072"],
                     wfs_env(tmp_path, server))
    assert result.returncode != 0 and "did not stay mounted" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not os.path.ismount(mountpoint)
