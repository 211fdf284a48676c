"""Property: random walks of the mount (listdir, stat, reads at random offsets) match the same tree on disk.

One run is written both to the test server and to a local folder; Hypothesis
drives a sequence of operations against both and compares every answer
(names, kinds, sizes, bytes, and the error kind for missing paths). Seeded
(``derandomize``) and bounded, so it is repeatable and quick.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import source_bytes
from wfs.testing.content import Generated

KEY = ("alice", "prop", "walk")
BLOCK = 8 << 20
FILES: dict[str, object] = {
    "a.txt": b"alpha\n" * 50,
    "empty.txt": b"",
    "one.bin": b"\x01",
    "dir/b.bin": Generated(size_bytes=BLOCK + 4321, seed=31),  # crosses a block boundary
    "dir/sub/c.txt": "ünïcödé\n".encode() * 33,
    "dir/sub/d.bin": Generated(size_bytes=70_001, seed=32),
    "other/e e.txt": b"spaced name\n",
    "other/deep/er/f.json": b'{"k": [1, 2, 3]}',
}
DIRS = sorted({"", *("/".join(name.split("/")[:i]) for name in FILES for i in range(1, name.count("/") + 1))})
PATHS = sorted(set(DIRS) | set(FILES) | {"nope", "dir/nope.txt", "dir/sub/zz", "a.txt/inside"})


def _outcome(call):
    try:
        return ("ok", call())
    except OSError as exc:
        return ("error", exc.errno)


def _list(root: Path, rel: str):
    return _outcome(lambda: sorted(os.listdir(root / rel)))


def _stat(root: Path, rel: str):
    def go():
        st_ = os.stat(root / rel)
        return (st_.st_mode & 0o170000, st_.st_size if not os.path.isdir(root / rel) else 0)

    return _outcome(go)


def _read(root: Path, rel: str, offset: int, size: int):
    def go():
        with open(root / rel, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    return _outcome(go)


operations = st.one_of(
    st.tuples(st.just("list"), st.sampled_from(DIRS + ["nope", "a.txt"])),
    st.tuples(st.just("stat"), st.sampled_from(PATHS)),
    st.tuples(
        st.just("read"),
        st.sampled_from(sorted(FILES)),
        st.one_of(st.integers(0, BLOCK + 5000), st.sampled_from([0, BLOCK - 3, BLOCK, 69_999])),
        st.one_of(st.integers(0, 300_000), st.sampled_from([1, 4096, 131072])),
    ),
)


def test_random_walks_match_the_same_tree_on_disk(server, mount_wfs, tmp_path):
    if server.store.file(*KEY, "a.txt") is None:
        server.add_run(*KEY, state="finished", files=FILES)
    local = tmp_path / "local"
    for name, value in FILES.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(source_bytes(value))
    mount = mount_wfs()
    remote = mount.path.joinpath(*KEY)

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(operations, min_size=1, max_size=12))
    def walk(steps):
        for step in steps:
            kind, rel = step[0], step[1]
            if kind == "list":
                assert _list(remote, rel) == _list(local, rel), step
            elif kind == "stat":
                assert _stat(remote, rel) == _stat(local, rel), step
            else:
                assert _read(remote, rel, step[2], step[3]) == _read(local, rel, step[2], step[3]), step[:2]

    walk()
    assert mount.proc.poll() is None
