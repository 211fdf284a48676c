"""Security: read-only and private mount, private cache, the key nowhere, hostile names stay inside."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from helpers import API_KEY, HOSTILE_FILES, run_wfs

RUN1 = ("alice", "proj", "run1")


def _mount_options(path: Path) -> tuple[set[str], set[str]]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            sep = fields.index("-")
            return set(fields[5].split(",")), set(fields[sep + 3].split(","))
    raise AssertionError(f"{path} not in mountinfo")


def test_mount_is_read_only_and_private_by_default(server, mounted):
    mount_opts, super_opts = _mount_options(mounted.path)
    assert "ro" in mount_opts and "ro" in super_opts
    assert "allow_other" not in super_opts and "default_permissions" in super_opts
    assert stat.S_IMODE(os.stat(mounted.path / "alice/proj/run1/config.yaml").st_mode) == 0o444


def _walk_all(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            yield Path(dirpath) / name, True
        for name in filenames:
            yield Path(dirpath) / name, False


def test_cache_dir_is_0700_and_its_files_0600(server, mount_wfs, tmp_path):
    cache = tmp_path / "loose-cache"
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)  # a pre-existing, too open cache dir is tightened
    mount = mount_wfs(cache_dir=cache)
    run = mount.path.joinpath(*RUN1)
    os.listdir(run)
    (run / "config.yaml").read_bytes()
    with open(run / "ckpt/model.bin", "rb") as handle:
        handle.read(1 << 20)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    seen = list(_walk_all(cache))
    assert any(not is_dir for _, is_dir in seen)
    for path, is_dir in seen:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))
        if is_dir:
            assert mode == 0o700, (path, oct(mode))
    assert stat.S_IMODE(os.stat(mount.log_file).st_mode) == 0o600


def test_api_key_is_in_no_log_cache_file_argv_or_error(server, mount_wfs, tmp_path):
    mount = mount_wfs("--log-level", "DEBUG")
    run = mount.path.joinpath(*RUN1)
    os.listdir(run)
    (run / "output.log").read_bytes()
    with pytest.raises(FileNotFoundError):
        os.stat(run / "missing.txt")
    token = base64.b64encode(f"api:{API_KEY}".encode())
    secrets = (API_KEY.encode(), token)
    for path, is_dir in _walk_all(mount.cache_dir):
        if not is_dir:
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path
    log = mount.log_file.read_bytes()
    assert log and not any(s in log for s in secrets)
    cmdline = Path(f"/proc/{mount.proc.pid}/cmdline").read_bytes()
    assert b"wfs" in cmdline and not any(s in cmdline for s in secrets)
    comm = Path(f"/proc/{mount.proc.pid}/comm").read_bytes()
    assert not any(s[:15] in comm for s in secrets)


def test_background_daemon_argv_has_no_key(server, tmp_path):
    from helpers import wfs_env

    mountpoint = tmp_path / "bg"
    mountpoint.mkdir()
    env = wfs_env(tmp_path, server)
    result = run_wfs(["mount", str(mountpoint), "--cache-dir", str(tmp_path / "c")], env)
    assert result.returncode == 0, result.stderr
    try:
        daemons = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(mountpoint).encode() in cmdline and b"--ready-fd" in cmdline:
                daemons.append(cmdline)
        assert daemons, "the daemon was not found"
        assert all(API_KEY.encode() not in c for c in daemons)
        assert API_KEY not in result.stderr + result.stdout
    finally:
        run_wfs(["unmount", str(mountpoint)], env)


def test_hostile_names_never_touch_anything_outside_the_cache(server, mount_wfs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = outside / "cache"
    mount = mount_wfs(cache_dir=cache)
    def outside_files():
        found = set()
        for dirpath, dirnames, filenames in os.walk(tmp_path):
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in (cache, mount.path)]
            found.update(Path(dirpath, n) for n in dirnames + filenames)
        return found

    before = outside_files()
    run = mount.path / "alice/odd/hostile"
    contents = set()
    for dirpath, _dirs, files in os.walk(run):
        for name in files:
            contents.add((Path(dirpath) / name).read_bytes())
    assert contents == set(HOSTILE_FILES.values())
    assert outside_files() == before
    for path, is_dir in _walk_all(cache):
        assert path.resolve().is_relative_to(cache.resolve())
        assert not is_dir or not path.is_symlink()
    assert not Path("/etc/passwd").read_bytes().startswith(b"not the real one")
