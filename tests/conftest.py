"""Shared fixtures: the W&B-compatible local server and real FUSE mounts of wfs.

Mounts run the real CLI in a subprocess and are always unmounted in teardown
(lazily if needed), with every wait bounded. FUSE is required: a machine
without it fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import API_KEY, BIG_RUN_FILES, MANY_RUNS, CACHE_RUN_FILES, SMALL_FILES_RUN, HOSTILE_FILES, OTHER_KEY, RUN1_FILES, Mount, force_unmount, wait_for, wfs_env
from wfs.testing.server import WandbTestServer


def add_run(server: WandbTestServer, entity, project, run_id, files: dict, **kwargs) -> None:
    server.add_run(entity, project, run_id, **kwargs)
    for name, content in files.items():
        server.put_file(entity, project, run_id, name, content)


def seed(server: WandbTestServer) -> None:
    add_run(server, "alice", "proj", "run1", RUN1_FILES, state="finished", display_name="brisk-sun-1")
    add_run(server, "alice", "proj", "run2", {"x.txt": b"x"}, state="finished", display_name="calm-moon-2")
    add_run(server, "alice", "proj", "live1", {"output.log": b"line 1\n"}, state="running", display_name="live-one")
    add_run(server, "team-a", "tproj", "trun1", {"notes.md": b"# team\n"}, state="finished")
    add_run(server, "bob", "bproj", "brun1", {"hello.txt": b"hi bob\n"}, state="finished")
    add_run(server, "alice", "big", "r10k", BIG_RUN_FILES, state="finished")
    add_run(server, "alice", "odd", "hostile", HOSTILE_FILES, state="finished")
    add_run(server, "alice", "dups", "d1", {"a.txt": b"first"}, state="finished", display_name="same", created_at=1_700_000_000)
    add_run(server, "alice", "dups", "d2", {"a.txt": b"second"}, state="finished", display_name="same", created_at=1_700_000_100)
    add_run(server, "alice", "dups", "d3", {"a.txt": b"third"}, state="finished", display_name="d1", created_at=1_700_000_200)
    add_run(server, "alice", "cache", "c1", CACHE_RUN_FILES, state="finished")
    add_run(server, "alice", "cache", "small", SMALL_FILES_RUN, state="finished")
    for i in range(MANY_RUNS):  # a project listed a page at a time; a few share a display name
        server.add_run("alice", "many-runs", f"m{i:05d}", state="finished", created_at=1_600_000_000 + i,
                       display_name="sweep-best" if i % 1000 == 999 else None)


@pytest.fixture(scope="session")
def wandb_server():
    server = WandbTestServer(api_keys={API_KEY: "alice", OTHER_KEY: "bob"}, teams={"alice": ["team-a"]})
    seed(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(wandb_server):
    """The session server with counters reset and no faults."""
    wandb_server.set_faults()
    wandb_server.reset_stats()
    return wandb_server


@pytest.fixture
def mount_wfs(tmp_path, wandb_server):
    """Factory: mount wfs in the foreground in a subprocess; unmounted at teardown."""
    mounts: list[Mount] = []

    def start(*extra: str, subpath: str = "", cache_dir: Path | None = None, api_key: str = API_KEY, name: str = "mnt") -> Mount:
        mountpoint = tmp_path / name
        mountpoint.mkdir(exist_ok=True)
        cache = cache_dir or tmp_path / "cache"
        log_file = tmp_path / f"{name}.log"
        env = wfs_env(tmp_path, wandb_server, api_key)
        cmd = [sys.executable, "-m", "wfs", "mount", str(mountpoint)]
        if subpath:
            cmd.append(subpath)
        cmd += ["-f", "--cache-dir", str(cache), "--log-file", str(log_file), "--log-level", "DEBUG", *extra]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        mount = Mount(mountpoint, proc, cache, log_file, env)
        mounts.append(mount)

        def up():
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise AssertionError(f"wfs exited with {proc.returncode}: {out}\n{mount.log()}")
            return os.path.ismount(mountpoint)

        wait_for(up, timeout=30, what=f"mount at {mountpoint}")
        return mount

    yield start
    for mount in mounts:
        force_unmount(mount.path)
        try:
            mount.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(mount.proc.pid, signal.SIGKILL)
            mount.proc.wait(timeout=10)
        if mount.proc.stdout:
            mount.proc.stdout.close()


@pytest.fixture
def mounted(mount_wfs):
    """A default mount of the whole account."""
    return mount_wfs()
