"""Listings at scale, freshness by run state, exact look-ups, faithful names (request counts from the server)."""

from __future__ import annotations

import math
import os
import threading
import time

from helpers import BIG_RUN_FILES, HOSTILE_FILES, MANY_RUNS, wait_for


def graphql(server) -> int:
    return server.stats()["graphql_requests"]


def walk_ls_l(root) -> int:
    """What `ls -lR` does: list every folder and stat every entry."""
    count = 0
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return count


def test_cold_ls_lR_of_10000_files_costs_pages_plus_two(server, mounted):
    run = mounted.path / "alice/big/r10k"
    server.reset_stats()
    entries = walk_ls_l(run)
    files = len(BIG_RUN_FILES)
    assert entries >= files
    cold = graphql(server)
    assert cold <= math.ceil(files / 1000) + 2, server.stats()["graphql_operations"]
    server.reset_stats()
    assert walk_ls_l(run) == entries
    assert graphql(server) == 0


def runs_pages(server) -> int:
    return server.stats()["graphql_operations"].get("Runs", 0)


def test_a_project_with_many_runs_is_listed_a_page_at_a_time(server, mounted):
    project = mounted.path / "alice/many-runs"
    with os.scandir(project) as entries:  # a reader that stops early, like `ls -U | head`
        first = [next(entries).name for _ in range(20)]
    assert first == [f"m{i:05d}" for i in range(20)]  # oldest first, as W&B pages them
    assert runs_pages(server) == 1
    server.reset_stats()
    names = os.listdir(project)
    assert runs_pages(server) == 2  # page 1 was kept; pages 2 and 3 fetched as the listing read on
    run_ids = [f"m{i:05d}" for i in range(MANY_RUNS)]
    assert names[: len(run_ids)] == run_ids
    # The display-name links come after the last page (their names depend on every run).
    assert names[len(run_ids):] == ["sweep-best", "sweep-best~m01999"]
    assert os.readlink(project / "sweep-best") == "m00999"
    asked = mounted.kernel_requests("readlink")
    assert os.readlink(project / "sweep-best") == "m00999"
    assert mounted.kernel_requests("readlink") == asked  # the kernel keeps the target
    server.reset_stats()
    assert os.path.isdir(project / "m02499") and os.listdir(project) == names
    assert server.stats()["graphql_requests"] == 0


def test_a_run_in_an_unlisted_project_costs_one_request_not_the_run_list(server, mounted):
    server.reset_stats()
    assert os.path.isdir(mounted.path / "alice/many-runs/m02400")
    assert runs_pages(server) == 0
    assert server.stats()["graphql_requests"] <= 3


def test_cold_stat_of_one_file_costs_at_most_three_requests(server, mounted):
    server.reset_stats()
    st = os.stat(mounted.path / "alice/big/r10k/output.log")
    assert st.st_size == len(BIG_RUN_FILES["output.log"])
    assert graphql(server) <= 3, server.stats()["graphql_operations"]
    assert server.stats()["graphql_operations"].get("RunFiles", 0) == 0  # no walk of the run


def test_missing_file_is_remembered_for_a_while(server, mounted):
    os.stat(mounted.path / "alice/big/r10k/output.log")
    server.reset_stats()
    for _ in range(5):
        assert not (mounted.path / "alice/big/r10k/no-such-file").exists()
    assert graphql(server) <= 1


def test_finished_run_relisted_after_remount_costs_nothing(server, mount_wfs, tmp_path):
    first = mount_wfs(name="m1")
    names = sorted(os.listdir(first.path / "alice/proj/run1/media/images"))
    walk_ls_l(first.path / "alice/proj/run1")
    subprocess_unmount(first.path)
    second = mount_wfs(name="m2", cache_dir=first.cache_dir)
    server.reset_stats()
    assert sorted(os.listdir(second.path / "alice/proj/run1/media/images")) == names
    walk_ls_l(second.path / "alice/proj/run1")
    assert graphql(server) == 0, server.stats()["graphql_operations"]


def subprocess_unmount(path):
    import subprocess

    subprocess.run(["fusermount3", "-u", str(path)], check=True, timeout=30)
    wait_for(lambda: not os.path.ismount(path), what="unmount")


def test_running_run_shows_new_size_and_bytes_after_ttl(server, mount_wfs):
    mount = mount_wfs("--running-ttl", "1")
    path = mount.path / "alice/proj/live1/output.log"
    try:
        old = path.read_bytes()
        new = old + b"line 2\n" * 1000
        server.put_file("alice", "proj", "live1", "output.log", new)
        wait_for(lambda: os.stat(path).st_size == len(new), timeout=15, what="new size of output.log")
        assert path.read_bytes() == new
    finally:
        server.put_file("alice", "proj", "live1", "output.log", b"line 1\n")


def test_the_kernel_keeps_a_finished_run_and_forgets_a_running_one_on_time(server, mount_wfs):
    mount = mount_wfs("--running-ttl", "1")
    done = mount.path / "alice/proj/run1/config.yaml"
    live = mount.path / "alice/proj/live1/output.log"
    os.stat(done)
    os.stat(live)
    started = time.monotonic()

    def live_comes_back_to_the_daemon() -> bool:
        before = mount.kernel_requests("getattr")
        os.stat(live)
        return mount.kernel_requests("getattr") > before

    wait_for(live_comes_back_to_the_daemon, timeout=15, what="the running run's attributes to expire")
    assert time.monotonic() - started >= 0.9  # not before its TTL
    assert mount.status()["kernel_invalidations"] >= 1  # told to forget, not timed out
    before = mount.kernel_requests("getattr")
    os.stat(done)  # as old as the live one's, but immutable: the kernel still has it
    assert mount.kernel_requests("getattr") == before


def test_sixteen_threads_listing_one_run_cause_one_listing(server, mounted):
    run = mounted.path / "alice/big/r10k/media/images"
    os.stat(mounted.path / "alice/big/r10k")
    server.reset_stats()
    results, barrier = [], threading.Barrier(16)

    def worker():
        barrier.wait(10)
        results.append(len(os.listdir(run)))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [9000] * 16
    assert server.stats()["graphql_operations"].get("RunFiles", 0) == math.ceil(len(BIG_RUN_FILES) / 1000)


def test_hostile_names_are_listed_and_readable_inside_the_run(server, mounted, tmp_path):
    run = mounted.path / "alice/odd/hostile"
    seen = {}
    for dirpath, _dirs, files in os.walk(run):
        for name in files:
            seen[os.path.relpath(os.path.join(dirpath, name), run)] = open(os.path.join(dirpath, name), "rb").read()
    assert sorted(seen.values()) == sorted(HOSTILE_FILES.values())
    assert seen["%2E%2E/escape.txt"] == b"dotdot"
    assert seen["%2E%2E/%2E%2E/etc/passwd"] == b"not the real one"
    assert seen["abs.txt"] == b"leading slash"
    assert seen["dup~file"] == b"file named like a folder"
    assert seen["dup/inner.txt"] == b"inside the folder"
    assert seen["ctrl\x01char.txt"] == b"control"
    assert all(len(os.path.basename(p).encode()) <= 255 for p in seen)
    # Nothing was written outside the cache dir (tmp_path holds mount, cache and logs only).
    assert not (mounted.path.parent / "escape.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cache", "home", "mnt", "mnt.log"])


def test_runs_also_appear_by_display_name_as_symlinks(server, mounted):
    project = mounted.path / "alice/proj"
    entries = set(os.listdir(project))
    assert {"run1", "run2", "live1", "brisk-sun-1", "calm-moon-2", "live-one"} <= entries
    assert os.readlink(project / "brisk-sun-1") == "run1"
    assert (project / "brisk-sun-1" / "config.yaml").read_bytes() == (project / "run1/config.yaml").read_bytes()


def test_duplicate_display_names_follow_the_documented_rule(server, mounted):
    project = mounted.path / "alice/dups"
    links = {name: os.readlink(project / name) for name in os.listdir(project) if os.path.islink(project / name)}
    # Oldest keeps the plain name; later ones and names equal to a run id get ~<run_id>.
    assert links == {"same": "d1", "same~d2": "d2", "d1~d3": "d3"}


def test_display_name_lookup_before_listing_costs_one_request(server, mount_wfs):
    mount = mount_wfs(name="dn")
    os.stat(mount.path / "alice/proj")
    server.reset_stats()
    assert (mount.path / "alice/proj/calm-moon-2/x.txt").read_bytes() == b"x"
    ops = server.stats()["graphql_operations"]
    assert ops.get("Runs", 0) == 1 and "RunFiles" not in ops, ops


def test_internal_manifests_hidden_only_when_asked(server, mount_wfs):
    shown = mount_wfs(name="shown")
    assert len(os.listdir(shown.path / "alice/big/r10k/artifact")) == 500
    hidden = mount_wfs("--hide-internal-files", name="hidden")
    assert "artifact" not in os.listdir(hidden.path / "alice/big/r10k")
    assert not (hidden.path / "alice/big/r10k/artifact/001/wandb_manifest.json").exists()
