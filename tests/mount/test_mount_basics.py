"""End to end: the CLI mounts the local W&B server and programs see runs as folders."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time

import pytest

from helpers import GIB, MIB, OTHER_KEY, RUN1_FILES, copy_tree_hashes, run_wfs, sha256, source_bytes, wait_for, wfs_env
from wfs.testing.content import generated_bytes

RUN1 = ("alice", "proj", "run1")


def test_tree_shows_entities_projects_runs_and_nested_files(server, mounted):
    root = mounted.path
    assert sorted(os.listdir(root)) == ["alice", "team-a"]
    projects = sorted(os.listdir(root / "alice"))
    assert "proj" in projects and projects == sorted(p.name for p in server.store.projects("alice"))
    project = root / "alice/proj"
    assert sorted(n for n in os.listdir(project) if not os.path.islink(project / n)) == ["live1", "run1", "run2"]
    run = root / "alice/proj/run1"
    assert sorted(os.listdir(run)) == sorted({name.split("/")[0] for name in RUN1_FILES})
    assert sorted(os.listdir(run / "media/images")) == ["sample_0_ab12.png", "sample_1_cd34.png"]
    assert os.listdir(run / "a/b/c") == ["deep.txt"]
    # An entity that / does not list is still reachable by name.
    assert os.listdir(root / "bob/bproj/brun1") == ["hello.txt"]
    assert (root / "team-a/tproj/trun1/notes.md").read_bytes() == b"# team\n"


def test_every_file_is_byte_identical_to_the_source(server, mounted):
    run = mounted.path / "alice/proj/run1"
    small = {name: value for name, value in RUN1_FILES.items() if name != "big/huge.bin"}
    seen = {name: digest for name, digest in copy_tree_hashes(run).items() if name != "big/huge.bin"}
    assert seen == {name: sha256(source_bytes(value)) for name, value in small.items()}


def test_attributes_sizes_mtimes_modes_owner(server, mounted):
    run = mounted.path / "alice/proj/run1"
    for name, value in RUN1_FILES.items():
        st = os.stat(run / name)
        expected_size = value.size_bytes if hasattr(value, "size_bytes") else len(value)
        assert st.st_size == expected_size, name
        assert stat.S_IMODE(st.st_mode) == 0o444 and stat.S_ISREG(st.st_mode)
        assert st.st_uid == os.getuid() and st.st_gid == os.getgid()
        updated_at = server.store.file(*RUN1, name).updated_at
        assert abs(st.st_mtime - updated_at) < 1.0, name
    for folder in (run, run / "media", mounted.path / "alice"):
        st = os.stat(folder)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555


def test_empty_file_and_unicode_names(server, mounted):
    run = mounted.path / "alice/proj/run1"
    assert (run / "empty.txt").read_bytes() == b""
    assert os.stat(run / "empty.txt").st_size == 0
    assert (run / "dir with space" / "ünïcödé file.txt").read_text() == "grüße, 世界\n"


@pytest.mark.parametrize(
    "missing",
    ["nobody-such-entity", "alice/no-project", "alice/proj/no-run", "alice/proj/run1/nope.txt", "alice/proj/run1/media/nope"],
)
def test_missing_paths_are_enoent(server, mounted, missing):
    with pytest.raises(FileNotFoundError):
        os.stat(mounted.path / missing)


def test_probe_names_cost_no_request(server, mounted):
    os.listdir(mounted.path / "alice/proj/run1")
    server.reset_stats()
    for probe in (".git", "alice/.DS_Store", "alice/proj/.hidden", "alice/proj/run1/.git", "alice/proj/run1/__pycache__"):
        with pytest.raises(FileNotFoundError):
            os.stat(mounted.path / probe)
    assert server.stats()["graphql_requests"] == 0


def test_writes_fail_with_erofs(server, mounted):
    run = mounted.path / "alice/proj/run1"
    attempts = [
        lambda: open(run / "config.yaml", "w"),
        lambda: open(run / "config.yaml", "a"),
        lambda: open(run / "new.txt", "w"),
        lambda: os.mkdir(run / "newdir"),
        lambda: os.unlink(run / "config.yaml"),
        lambda: os.rename(run / "config.yaml", run / "other.yaml"),
        lambda: os.rmdir(run / "a/b/c"),
        lambda: os.chmod(run / "config.yaml", 0o644),
        lambda: os.truncate(run / "config.yaml", 0),
        lambda: os.symlink("config.yaml", run / "link"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, attempt
    assert (run / "config.yaml").read_bytes() == RUN1_FILES["config.yaml"]


def test_partial_read_of_a_large_file_fetches_about_what_was_read(server, mounted):
    path = mounted.path / "alice/proj/run1/big/huge.bin"
    offset = 700 * MIB + 123
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        data = handle.read(4096)
    assert data == generated_bytes(11, offset, offset + 4096)
    served = server.stats()["bytes_served"]
    assert 4096 <= served <= 2 * 8 * MIB, served
    assert served < GIB // 50


def test_second_read_is_served_from_the_cache(server, mounted):
    path = mounted.path / "alice/proj/run1/output.log"
    first = path.read_bytes()
    served = server.stats()["bytes_served"]
    assert served >= len(first)
    # Drop the kernel's pages so the read reaches wfs again.
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    assert path.read_bytes() == first
    assert server.stats()["bytes_served"] == served


def test_subpath_mounts_just_that_subtree(server, mount_wfs):
    mount = mount_wfs(subpath="alice/proj/run1", name="sub")
    assert (mount.path / "config.yaml").read_bytes() == RUN1_FILES["config.yaml"]
    assert "media" in os.listdir(mount.path)


def test_background_mount_then_wfs_unmount(server, tmp_path):
    mountpoint = tmp_path / "bg"
    mountpoint.mkdir()
    env = wfs_env(tmp_path, server)
    started = time.monotonic()
    result = run_wfs(["mount", str(mountpoint), "--cache-dir", str(tmp_path / "c")], env)
    try:
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mountpoint), "mount returned before the mount was up"
        assert time.monotonic() - started < 30
        assert os.listdir(mountpoint / "alice/proj/run2") == ["x.txt"]
        result = run_wfs(["unmount", str(mountpoint)], env)
        assert result.returncode == 0, result.stderr
        assert not os.path.ismount(mountpoint)
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], timeout=30)


def test_wrong_key_fails_fast_naming_the_host(server, tmp_path):
    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    env = wfs_env(tmp_path, server, api_key="wrong-" + "x" * 40)
    started = time.monotonic()
    result = run_wfs(["mount", str(mountpoint), "--cache-dir", str(tmp_path / "c")], env)
    assert result.returncode != 0
    assert time.monotonic() - started < 10
    host = server.base_url.split("://", 1)[1]
    assert host in result.stderr and "key" in result.stderr.lower()
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.ismount(mountpoint)


@pytest.mark.parametrize(
    "args, message",
    [
        (["mount", "{tmp}/does-not-exist"], "does not exist"),
        (["mount", "{tmp}/m", "--cache-max-size", "lots"], "not a size"),
        (["unmount", "{tmp}/m"], "not mounted"),
    ],
)
def test_bad_input_gives_one_line_and_no_traceback(server, tmp_path, args, message):
    (tmp_path / "m").mkdir()
    env = wfs_env(tmp_path, server)
    result = run_wfs([a.format(tmp=tmp_path) for a in args], env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_busy_mountpoint_is_refused(server, mounted, tmp_path):
    result = run_wfs(["mount", str(mounted.path), "--cache-dir", str(tmp_path / "c2")], mounted.env)
    assert result.returncode != 0 and "busy" in result.stderr


def test_other_users_key_sees_its_own_entity(server, mount_wfs):
    mount = mount_wfs(api_key=OTHER_KEY, name="bob")
    assert os.listdir(mount.path) == ["bob"]
    wait_for(lambda: (mount.path / "bob/bproj/brun1/hello.txt").read_bytes() == b"hi bob\n", what="bob's file")
