"""Helpers shared by the tests (constants, polling, subprocess runners)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from wfs.testing.content import Generated
from wfs.testing.server import WandbTestServer

API_KEY = "wfs-test-key-" + "0123456789abcdef" * 3
OTHER_KEY = "wfs-other-key-" + "fedcba9876543210" * 3
GIB = 1 << 30
MIB = 1 << 20

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)

# The seeded tree most tests read: name -> bytes or Generated.
RUN1_FILES: dict[str, object] = {
    "config.yaml": b"lr:\n  value: 0.001\nepochs:\n  value: 3\n",
    "wandb-summary.json": b'{"loss": 0.25, "_step": 99}',
    "output.log": b"".join(b"step %d loss %.3f\n" % (i, 1 / (i + 1)) for i in range(2000)),
    "media/images/sample_0_ab12.png": PNG_1x1,
    "media/images/sample_1_cd34.png": PNG_1x1 + b"\x00",
    "media/table/preds.table.json": b'{"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}',
    "dir with space/ünïcödé file.txt": "grüße, 世界\n".encode(),
    "empty.txt": b"",
    "a/b/c/deep.txt": b"deep\n",
    "ckpt/model.bin": Generated(size_bytes=64 * MIB + 12345, seed=7),
    "big/huge.bin": Generated(size_bytes=GIB, seed=11, md5=False),
}

# A 10,000-file run spread over nested folders.
BIG_RUN_FILES: dict[str, bytes] = {
    **{f"media/images/img_{i:05d}.png": b"%d" % i for i in range(9000)},
    **{f"artifact/{i:03d}/wandb_manifest.json": b"{}" for i in range(500)},
    **{f"logs/part_{i:04d}.txt": b"log %d\n" % i for i in range(499)},
    "output.log": b"done\n",
}

# Runs in alice/many-runs: three pages of 1,000.
MANY_RUNS = 2500

# Names W&B accepts that a careless mount would mishandle.
HOSTILE_FILES: dict[str, bytes] = {
    "../escape.txt": b"dotdot",
    "../../etc/passwd": b"not the real one",
    "/abs.txt": b"leading slash",
    "a//b.txt": b"empty component",
    "./dot.txt": b"dot component",
    "sp ace [1]*:@?.txt": b"specials",
    "ctrl\x01char.txt": b"control",
    "long-" + "x" * 300 + ".txt": b"long",
    "dup": b"file named like a folder",
    "dup/inner.txt": b"inside the folder",
    "néstéd/ünï.txt": b"non-ascii",
}

# For cache tests: one 200 MB file and ten 20 MB ones (md5 given, so verified).
CACHE_RUN_FILES: dict[str, object] = {
    "f200.bin": Generated(size_bytes=200 * MIB, seed=21),
    **{f"parts/p{i}.bin": Generated(size_bytes=20 * MIB, seed=100 + i) for i in range(10)},
}

# 120 small files in one folder, for folder read-ahead.
SMALL_FILES_RUN: dict[str, bytes] = {f"media/images/s_{i:04d}.png": bytes([i % 251]) * (1000 + 37 * i) for i in range(120)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_bytes(value) -> bytes:
    return value.read() if isinstance(value, Generated) else bytes(value)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def force_unmount(path: Path) -> None:
    for args in (["-u"], ["-uz"]):
        if not os.path.ismount(path):
            try:
                os.stat(path)
                return
            except OSError:
                pass  # stale: fall through to a lazy unmount
        subprocess.run(["fusermount3", *args, str(path)], capture_output=True, timeout=30)


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen
    cache_dir: Path
    log_file: Path
    env: dict = field(default_factory=dict)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def status(self) -> dict:
        """The mount's hidden /.wfs/status.json."""
        return json.loads((self.path / ".wfs/status.json").read_text())

    def kernel_requests(self, op: str) -> int:
        """How many ``op`` requests the kernel sent the daemon so far (status.json)."""
        return self.status()["kernel_requests"].get(op, 0)


def wfs_env(tmp_path: Path, server: WandbTestServer, api_key: str = API_KEY) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
        WANDB_API_KEY=api_key,
        WANDB_BASE_URL=server.base_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def run_wfs(args: list[str], env: dict, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wfs", *args], env=env, capture_output=True, text=True, timeout=timeout)


def copy_tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = sha256(path.read_bytes())
    return out
