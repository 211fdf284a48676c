#!/usr/bin/env python3
"""wfs against what W&B users do today: ``make bench`` (full) / ``make bench-quick``.

Starts the W&B-compatible local server (``python -m wfs.testing.server``) on a
generated data tree, mounts wfs in the foreground as a subprocess (so its RSS
can be sampled), and runs each case against its competitor alternately
(A B A B ..., ``--rounds`` rounds). Every read is checked against the expected
bytes: wrong bytes fail the bench (exit 1); timings never do.

Cases (sizes of the full run; ``--quick`` shrinks them):
 1. cold sequential read of a 1 GiB file: ``cat`` on wfs vs ``curl -L`` of the file's url
 2. warm re-read of that file vs reading a local copy (page cache counts), plus a
    "wfs disk cache" variant after a remount (and drop_caches when root)
 3. ``head -c 4096`` of the 1 GiB file (fresh mount and cache): bytes fetched, time vs curl -r
 4. cold ``ls -lR`` of a 10,000-file run vs the SDK iterating ``run.files(per_page=50)``
 5. ``cp -r`` of a 1,000-small-file run with 20 ms latency vs the SDK ``File.download`` loop
 6. daemon peak RSS while streaming a 5 GiB file (and the 1 GiB file, for flatness)

Output: a table on stdout and ``bench-results.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wfs.testing.content import iter_generated  # noqa: E402
from wfs.testing.graphql_api import file_url  # noqa: E402

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
API_KEY = "wfsbench" + "0123456789abcdef" * 2  # 40 chars
ENTITY, PROJECT = "bench", "wfsbench"
PY = sys.executable


class BenchError(Exception):
    """A case could not run, or read wrong bytes: the bench exits non-zero."""


# ----------------------------------------------------------------- data set
def profile(quick: bool) -> dict:
    if quick:
        return dict(big=64 * MIB, stream=256 * MIB, many=1000, small=200, rounds=2, stream_rounds=1)
    return dict(big=GIB, stream=5 * GIB, many=10_000, small=1000, rounds=3, stream_rounds=1)


def many_files(n: int) -> dict[str, dict]:
    """A media-like run: nested folders, small files (1 B – 4 KB)."""
    out = {}
    for i in range(n):
        name = f"media/step_{i // 1000:02d}/group_{(i // 100) % 10}/item_{i:05d}.json"
        out[name] = {"size": 1 + (i * 397) % 4096, "seed": 10_000 + i}
    return out


def small_files(n: int) -> dict[str, dict]:
    """Checkpoint/media shards of 1–200 KB, a few folders deep."""
    rng = random.Random(5)
    out = {}
    for i in range(n):
        name = f"shards/part_{i % 10}/shard_{i:04d}.bin"
        out[name] = {"size": rng.randint(1 * 1000, 200 * 1000), "seed": 100_000 + i}
    return out


def write_data_tree(root: Path, prof: dict) -> dict[str, dict[str, dict]]:
    runs = {
        "big": {"big.bin": {"size": prof["big"], "seed": 1, "md5": False}},
        "stream": {"stream.bin": {"size": prof["stream"], "seed": 2, "md5": False}},
        "many": many_files(prof["many"]),
        "small": small_files(prof["small"]),
    }
    for run_id, files in runs.items():
        run_dir = root / ENTITY / PROJECT / run_id
        run_dir.mkdir(parents=True)
        meta = {"state": "finished", "displayName": f"bench-{run_id}", "createdAt": "2024-05-01T12:00:00",
                "generated": files}
        (run_dir / "_wfs_run.json").write_text(json.dumps(meta))
    return runs


_expected_cache: dict[tuple[int, int], str] = {}


def expected_sha256(seed: int, size: int) -> str:
    key = (seed, size)
    if key not in _expected_cache:
        digest = hashlib.sha256()
        for piece in iter_generated(seed, 0, size):
            digest.update(piece)
        _expected_cache[key] = digest.hexdigest()
    return _expected_cache[key]


def sha256_file(path: Path | str, limit: int | None = None) -> tuple[str, int]:
    digest = hashlib.sha256()
    n = 0
    buf = bytearray(4 * MIB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while limit is None or n < limit:
            want = len(buf) if limit is None else min(len(buf), limit - n)
            got = fh.readinto(view[:want])
            if not got:
                break
            digest.update(view[:got])
            n += got
    return digest.hexdigest(), n


def check_file(path: Path, spec: dict, what: str) -> None:
    got, n = sha256_file(path)
    if n != spec["size"] or got != expected_sha256(spec["seed"], spec["size"]):
        raise BenchError(f"{what}: wrong bytes in {path} ({n} bytes read, {spec['size']} expected)")


# ------------------------------------------------------------- processes
class Procs:
    """Every process and mount this bench starts, so ``cleanup`` can undo all of them."""

    def __init__(self) -> None:
        self.mounts: list[Mount] = []
        self.others: list[subprocess.Popen] = []

    def cleanup(self) -> None:
        for m in list(self.mounts):
            try:
                m.stop()
            except Exception as exc:  # keep cleaning the rest
                print(f"bench: cleanup of {m.path}: {exc}", file=sys.stderr)
        for p in self.others:
            stop_process(p)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # started with start_new_session: its own group
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


PROCS = Procs()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout}s waiting for {what}")


class Server:
    def __init__(self, data: Path, work: Path):
        self.ready_file = work / "server.json"
        self.log = open(work / "server.log", "wb")
        self.proc = subprocess.Popen(
            [PY, "-m", "wfs.testing.server", "--data", str(data), "--port", "0", "--storage-port", "0",
             "--api-key", f"{API_KEY}={ENTITY}", "--team", "bench-team", "--page-cap", "1000",
             "--ready-file", str(self.ready_file)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        PROCS.others.append(self.proc)

        def ready():
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode}: {(work / 'server.log').read_text()}")
            return self.ready_file.exists()

        wait_for(ready, 120, "the local W&B server")
        info = json.loads(self.ready_file.read_text())
        self.base_url = info["base_url"]

    def control(self, action: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base_url}/_wfs/{action}", data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self.control("reset", {})

    def stats(self) -> dict:
        return self.control("stats")

    def latency(self, ms: float) -> None:
        self.control("faults", {"latency_seconds": ms / 1000.0})

    def quiet_stats(self, settle: float = 0.4, timeout: float = 30.0) -> dict:
        """Counters once no request has arrived for ``settle`` s (background read-ahead done)."""
        last = self.stats()
        stable_since = time.monotonic()
        deadline = stable_since + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.stats()
            key = ("graphql_requests", "file_url_requests", "storage_requests", "bytes_served")
            if any(now[k] != last[k] for k in key):
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= settle:
                return now
        return last

    def file_url(self, run_id: str, name: str) -> str:
        return file_url(self.base_url, ENTITY, PROJECT, run_id, name)


class Mount:
    def __init__(self, env: dict, path: Path, cache_dir: Path, log: Path):
        self.path, self.cache_dir, self.log = path, cache_dir, log
        path.mkdir(parents=True, exist_ok=True)
        self.log_fh = open(log, "ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "wfs", "mount", str(path), "-f", "--cache-dir", str(cache_dir), "--log-level", "WARNING"],
            cwd=ROOT, env=env, stdout=self.log_fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
        PROCS.mounts.append(self)

        def up():
            if self.proc.poll() is not None:
                raise BenchError(f"wfs exited with {self.proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            return os.path.ismount(path)

        try:
            wait_for(up, 60, f"the mount at {path}")
        except BaseException:
            self.stop()
            raise

    def status(self) -> dict[str, int]:
        """VmHWM / VmRSS of the daemon in bytes."""
        out = {}
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith(("VmHWM:", "VmRSS:")):
                        key, value = line.split(":", 1)
                        out[key] = int(value.split()[0]) * KIB
        except OSError:
            pass
        return out

    def peak_rss(self) -> int:
        return self.status().get("VmHWM", 0)

    def stop(self) -> None:
        if self in PROCS.mounts:
            PROCS.mounts.remove(self)
        for args in (["-u"], ["-uz"]):
            if not os.path.ismount(self.path):
                break
            try:
                subprocess.run(["fusermount3", *args, str(self.path)], capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        self.log_fh.close()


class RssSampler:
    """Samples the daemon's VmRSS every 20 ms (VmHWM is read at the end too)."""

    def __init__(self, mount: Mount):
        self.mount, self.max_rss, self.samples = mount, 0, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.wait(0.02):
            rss = self.mount.status().get("VmRSS", 0)
            self.max_rss = max(self.max_rss, rss)
            self.samples.append((round(time.monotonic() - t0, 2), rss))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=5)


class Sdk:
    """The long-lived ``scripts/bench_sdk.py`` subprocess."""

    def __init__(self, env: dict):
        self.proc = subprocess.Popen(
            [PY, str(ROOT / "scripts" / "bench_sdk.py")], env=env, cwd=env["HOME"], text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(Path(env["HOME"]) / "sdk.log", "w"),
            start_new_session=True,
        )
        PROCS.others.append(self.proc)
        hello = self._read(120)
        self.version = hello.get("wandb")

    def _read(self, timeout: float) -> dict:
        result: list = []
        t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not result or not result[0]:
            raise BenchError(f"the SDK worker did not answer within {timeout}s")
        return json.loads(result[0])

    def call(self, timeout: float = 900, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout)
        if not reply.get("ok"):
            raise BenchError(f"SDK {cmd.get('op')}: {reply.get('error')}")
        return reply

    def stop(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=20)
        except Exception:
            stop_process(self.proc)


# ----------------------------------------------------------------- helpers
def timed(cmd: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, timeout=kwargs.pop("timeout", 3600), **kwargs)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else (proc.stderr or "")
        raise BenchError(f"{' '.join(cmd[:3])}... exited {proc.returncode}: {err[-500:]}")
    return seconds, proc


def drop_caches(enabled: bool) -> bool:
    if not enabled:
        return False
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def counts(stats: dict) -> dict:
    return {k: stats.get(k, 0) for k in ("graphql_requests", "file_url_requests", "storage_requests",
                                          "range_requests", "bytes_served")}


def summary(values: list[float]) -> dict:
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "samples": values}


class Bench:
    def __init__(self, args, prof: dict, work: Path):
        self.args, self.prof, self.work = args, prof, work
        self.rounds = args.rounds or prof["rounds"]
        self.results: list[dict] = []
        self.failed = False
        self.curl = shutil.which("curl") if not args.no_curl else None
        self.drop = args.drop_caches and os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)
        self.n_mount = 0

    # --- setup ------------------------------------------------------------
    def setup(self) -> None:
        data = self.work / "data"
        self.runs = write_data_tree(data, self.prof)
        self.server = Server(data, self.work)
        home = self.work / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(self.work / "xdg"), WANDB_API_KEY=API_KEY,
                   WANDB_BASE_URL=self.server.base_url, PYTHONUNBUFFERED="1", NETRC=str(home / "netrc"),
                   WANDB_SILENT="true")
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            path = home / var.lower()
            path.mkdir()
            env[var] = str(path)
        self.env = env
        self.sdk: Sdk | None = None

    def sdk_worker(self) -> Sdk:
        if self.sdk is None:
            self.sdk = Sdk(self.env)
        return self.sdk

    def mount(self, cache: Path | None = None) -> Mount:
        self.n_mount += 1
        env = dict(self.env)
        env.update(item.split("=", 1) for item in self.args.daemon_env)
        cache = cache or self.work / f"cache{self.n_mount}"
        return Mount(env, self.work / f"mnt{self.n_mount}", cache, self.work / f"wfs{self.n_mount}.log")

    def warm_server(self, sdk: Sdk, run_id: str) -> None:
        """One untimed listing, so the server's lazy md5s are not charged to whoever goes first."""
        sdk.call(op="api")
        sdk.call(op="list", path=f"{ENTITY}/{PROJECT}/{run_id}", per_page=1000)

    def run_path(self, mount: Mount, run_id: str, name: str = "") -> Path:
        p = mount.path / ENTITY / PROJECT / run_id
        return p / name if name else p

    def fresh_dir(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def drop_cache_dir(self, mount: Mount) -> None:
        shutil.rmtree(mount.cache_dir, ignore_errors=True)

    def http_get(self, url: str, out: str, byte_range: str | None = None) -> float:
        """The competitor download: curl -L if installed, else Python requests (labelled)."""
        if self.curl:
            cmd = [self.curl, "-sS", "-L", "--fail", "-u", f"api:{API_KEY}", "-o", out]
            if byte_range:
                cmd += ["-r", byte_range]
            seconds, _ = timed(cmd + [url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            return seconds
        code = ("import sys,requests\n"
                "h={'Range':'bytes='+sys.argv[4]} if sys.argv[4] else {}\n"
                "r=requests.get(sys.argv[1],auth=('api',sys.argv[2]),headers=h,stream=True,timeout=60)\n"
                "r.raise_for_status()\n"
                "with open(sys.argv[3],'wb') as f:\n"
                "    for c in r.iter_content(1<<20): f.write(c)\n")
        seconds, _ = timed([PY, "-c", code, url, API_KEY, out, byte_range or ""],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return seconds

    @property
    def http_label(self) -> str:
        return "curl -L" if self.curl else "python requests (curl missing)"

    def dump_logs(self, lines: int = 40) -> None:
        """The tail of the newest daemon log, so a failure is explained before the work dir goes."""
        logs = sorted(self.work.glob("wfs*.log"), key=lambda p: p.stat().st_mtime)
        for log in logs[-2:]:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                print(f"--- {log.name} (last {len(tail)} lines)", file=sys.stderr)
                print("\n".join(tail), file=sys.stderr)

    def record(self, **entry) -> dict:
        self.results.append(entry)
        return entry

    def run_case(self, fn) -> None:
        name = fn.__name__
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            self.failed = True
            traceback.print_exc()
            self.dump_logs()
            self.record(case=name, error=f"{type(exc).__name__}: {exc}")
        finally:
            for m in list(PROCS.mounts):
                m.stop()
            self.server.latency(0)
        print(f"bench: {name} done in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)

    # --- cases 1 + 2 ------------------------------------------------------
    def case_big_read(self) -> None:
        spec = self.runs["big"]["big.bin"]
        size = spec["size"]
        self.server.latency(self.args.latency_ms)
        url = self.server.file_url("big", "big.bin")
        expected = expected_sha256(spec["seed"], size)
        local = self.work / "local-copy.bin"
        self.http_get(url, str(local))  # the competitor's "local copy", verified once
        if sha256_file(local) != (expected, size):
            raise BenchError(f"{self.http_label} fetched wrong bytes")
        c1 = {"wfs": [], "comp": [], "wfs_counts": [], "comp_counts": [], "rss": []}
        c2 = {"wfs": [], "comp": [], "wfs_counts": []}
        c2d = {"wfs": [], "comp": [], "wfs_counts": []}
        for r in range(self.rounds):
            # 1A: wfs cold (fresh cache dir, fresh mount)
            m = self.mount()
            path = self.run_path(m, "big", "big.bin")
            os.stat(path)  # metadata is not what case 1 measures
            self.server.reset()
            secs, _ = timed(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            c1["wfs"].append(secs)
            c1["wfs_counts"].append(counts(self.server.quiet_stats()))
            c1["rss"].append(m.peak_rss())
            check_file(path, spec, "case 1 wfs cold read")  # page cache holds what cat read
            # 1B: curl
            self.server.reset()
            c1["comp"].append(self.http_get(url, os.devnull))
            c1["comp_counts"].append(counts(self.server.stats()))
            # 1C (info): curl -o a file on the same disk as the cache: what a download costs
            c1.setdefault("comp_disk", []).append(self.http_get(url, str(self.work / "curl-copy.bin")))
            (self.work / "curl-copy.bin").unlink()
            # 2A: warm re-read through the same mount (page cache counts)
            self.server.reset()
            secs, _ = timed(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            c2["wfs"].append(secs)
            c2["wfs_counts"].append(counts(self.server.quiet_stats(settle=0.2)))
            # 2B: local copy (page cache counts: it was just read)
            timed(["cat", str(local)], stdout=subprocess.DEVNULL)  # make sure it is as warm as wfs's
            secs, _ = timed(["cat", str(local)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            c2["comp"].append(secs)
            # 2A': wfs from its disk cache: remount with the same cache dir (page cache of the
            # mount is gone with the mount; drop_caches too when root, for the cache files)
            cache = m.cache_dir
            m.stop()
            m = self.mount(cache)
            path = self.run_path(m, "big", "big.bin")
            os.stat(path)
            dropped = drop_caches(self.drop)
            self.server.reset()
            secs, _ = timed(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            c2d["wfs"].append(secs)
            c2d["wfs_counts"].append(counts(self.server.quiet_stats(settle=0.2)))
            check_file(path, spec, "case 2 wfs disk-cache read")
            drop_caches(self.drop)
            secs, _ = timed(["cat", str(local)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            c2d["comp"].append(secs)
            m.stop()
            self.drop_cache_dir(m)
            print(f"  round {r + 1}: cold {size / c1['wfs'][-1] / MIB:.0f} MB/s vs {self.http_label} "
                  f"{size / c1['comp'][-1] / MIB:.0f}; warm {size / c2['wfs'][-1] / MIB:.0f} vs local "
                  f"{size / c2['comp'][-1] / MIB:.0f}; disk-cache {size / c2d['wfs'][-1] / MIB:.0f} vs local "
                  f"{size / c2d['comp'][-1] / MIB:.0f}", file=sys.stderr, flush=True)
        mib = lambda xs: [size / x / MIB for x in xs]  # noqa: E731 - MiB/s per sample
        self.record(case="1 cold sequential read", unit="MiB/s", size_bytes=size,
                    wfs=summary(mib(c1["wfs"])), competitor=summary(mib(c1["comp"])), competitor_label=self.http_label,
                    ratio=statistics.median(c1["comp"]) / statistics.median(c1["wfs"]), ratio_def="throughput wfs / curl",
                    goal=">= 1.0", goal_op="ge", goal_value=1.0,
                    wfs_counts=c1["wfs_counts"], competitor_counts=c1["comp_counts"], daemon_peak_rss=max(c1["rss"]))
        self.record(case="1b cold read vs download to disk (info)", unit="MiB/s", size_bytes=size,
                    wfs=summary(mib(c1["wfs"])), competitor=summary(mib(c1["comp_disk"])),
                    competitor_label=f"{self.http_label} -o file", goal="-", goal_op=None,
                    ratio=statistics.median(c1["comp_disk"]) / statistics.median(c1["wfs"]),
                    ratio_def="throughput wfs / curl writing to disk")
        self.record(case="2 warm re-read (page cache)", unit="MiB/s", size_bytes=size,
                    wfs=summary(mib(c2["wfs"])), competitor=summary(mib(c2["comp"])), competitor_label="cat local copy (page cache)",
                    ratio=statistics.median(c2["comp"]) / statistics.median(c2["wfs"]), ratio_def="throughput wfs warm / local",
                    goal=">= 0.8", goal_op="ge", goal_value=0.8, wfs_counts=c2["wfs_counts"])
        self.record(case="2b re-read from wfs disk cache (remount" + (", drop_caches)" if self.drop else ")"),
                    unit="MiB/s", size_bytes=size, drop_caches=self.drop,
                    wfs=summary(mib(c2d["wfs"])), competitor=summary(mib(c2d["comp"])),
                    competitor_label="cat local copy" + (" (drop_caches)" if self.drop else " (page cache)"),
                    ratio=statistics.median(c2d["comp"]) / statistics.median(c2d["wfs"]),
                    ratio_def="throughput wfs disk cache / local", goal=">= 0.8 (info)", goal_op="ge", goal_value=0.8,
                    wfs_counts=c2d["wfs_counts"])
        local.unlink(missing_ok=True)

    # --- case 3 -----------------------------------------------------------
    def case_head(self) -> None:
        spec = self.runs["big"]["big.bin"]
        self.server.latency(self.args.latency_ms)
        url = self.server.file_url("big", "big.bin")
        want = b"".join(bytes(p) for p in iter_generated(spec["seed"], 0, 4096))
        res = {"wfs": [], "comp": [], "wfs_counts": [], "comp_counts": [], "rss": [], "wfs_lookup": []}
        for _ in range(self.rounds):
            m = self.mount()
            path = self.run_path(m, "big", "big.bin")
            self.server.reset()
            t0 = time.perf_counter()
            os.stat(path)  # the lookup a shell does first; timed separately
            res["wfs_lookup"].append(time.perf_counter() - t0)
            secs, proc = timed(["head", "-c", "4096", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if proc.stdout != want:
                raise BenchError("case 3: head -c 4096 through wfs returned wrong bytes")
            res["wfs"].append(secs)
            res["wfs_counts"].append(counts(self.server.quiet_stats(settle=1.0)))
            res["rss"].append(m.peak_rss())
            m.stop()
            self.drop_cache_dir(m)
            self.server.reset()
            out = self.work / "head.curl"
            res["comp"].append(self.http_get(url, str(out), "0-4095"))
            if out.read_bytes() != want:
                raise BenchError(f"case 3: {self.http_label} -r 0-4095 returned wrong bytes")
            res["comp_counts"].append(counts(self.server.stats()))
        fetched = max(c["bytes_served"] for c in res["wfs_counts"])
        self.record(case="3 head -c 4096 of the big file", unit="s", wfs=summary(res["wfs"]),
                    competitor=summary(res["comp"]), competitor_label=f"{self.http_label} -r 0-4095",
                    ratio=statistics.median(res["wfs"]) / statistics.median(res["comp"]),
                    ratio_def="time wfs head / curl range (info)", goal="fetched <= 8 MiB", goal_op="bytes_le",
                    goal_value=8 * MIB, fetched_bytes_max=fetched, wfs_lookup_seconds=summary(res["wfs_lookup"]),
                    wfs_counts=res["wfs_counts"], competitor_counts=res["comp_counts"], daemon_peak_rss=max(res["rss"]))

    # --- case 4 -----------------------------------------------------------
    def case_ls(self) -> None:
        files = self.runs["many"]
        n, total = len(files), sum(s["size"] for s in files.values())
        self.server.latency(self.args.latency_ms)
        sdk = self.sdk_worker()
        self.warm_server(sdk, "many")
        res = {"wfs": [], "comp": [], "wfs_counts": [], "comp_counts": [], "rss": []}
        for _ in range(self.rounds):
            m = self.mount()
            self.server.reset()
            secs, proc = timed(["ls", "-lR", str(self.run_path(m, "many"))], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "LC_ALL": "C"})
            res["wfs"].append(secs)
            res["wfs_counts"].append(counts(self.server.quiet_stats(settle=0.2)))
            res["rss"].append(m.peak_rss())
            lines = [ln.split() for ln in proc.stdout.decode(errors="replace").splitlines() if ln.startswith("-")]
            got_n, got_total = len(lines), sum(int(ln[4]) for ln in lines)
            if (got_n, got_total) != (n, total):
                raise BenchError(f"case 4: ls -lR saw {got_n} files / {got_total} bytes, expected {n} / {total}")
            m.stop()
            self.drop_cache_dir(m)
            sdk.call(op="api")
            self.server.reset()
            reply = sdk.call(op="list", path=f"{ENTITY}/{PROJECT}/many", per_page=50)
            if (reply["count"], reply["total_bytes"]) != (n, total):
                raise BenchError(f"case 4: the SDK listed {reply['count']} files / {reply['total_bytes']} bytes")
            res["comp"].append(reply["seconds"])
            res["comp_counts"].append(counts(self.server.stats()))
        self.record(case=f"4 cold ls -lR of {n} files", unit="s", wfs=summary(res["wfs"]),
                    competitor=summary(res["comp"]), competitor_label=f"SDK run.files(per_page=50), wandb {sdk.version}",
                    ratio=statistics.median(res["wfs"]) / statistics.median(res["comp"]),
                    ratio_def="time wfs / SDK", goal="<= 0.2", goal_op="le", goal_value=0.2,
                    wfs_counts=res["wfs_counts"], competitor_counts=res["comp_counts"], daemon_peak_rss=max(res["rss"]))

    # --- case 5 -----------------------------------------------------------
    def case_cp(self) -> None:
        files = self.runs["small"]
        n, total = len(files), sum(s["size"] for s in files.values())
        self.server.latency(self.args.small_latency_ms)
        sdk = self.sdk_worker()
        self.warm_server(sdk, "small")
        res = {"wfs": [], "comp": [], "wfs_counts": [], "comp_counts": [], "rss": []}

        def verify(root: Path, what: str) -> None:
            for name, spec in files.items():
                check_file(root / name, spec, what)
            extra = sum(len(fs) for _, _, fs in os.walk(root)) - n
            if extra:
                raise BenchError(f"{what}: {extra} unexpected files in {root}")

        for _ in range(self.rounds):
            m = self.mount()
            dest = self.fresh_dir("cp-dest")
            self.server.reset()
            secs, _ = timed(["cp", "-r", str(self.run_path(m, "small")), str(dest / "run")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            res["wfs"].append(secs)
            res["wfs_counts"].append(counts(self.server.quiet_stats(settle=0.3)))
            res["rss"].append(m.peak_rss())
            m.stop()
            self.drop_cache_dir(m)
            verify(dest / "run", "case 5 wfs cp -r")
            dest = self.fresh_dir("sdk-dest")
            sdk.call(op="api")
            self.server.reset()
            reply = sdk.call(op="download", path=f"{ENTITY}/{PROJECT}/small", root=str(dest), per_page=50)
            res["comp"].append(reply["seconds"])
            res["comp_counts"].append(counts(self.server.stats()))
            verify(dest, "case 5 SDK download")
            print(f"  round: wfs {secs:.2f}s, SDK {reply['seconds']:.2f}s", file=sys.stderr, flush=True)
        shutil.rmtree(self.work / "cp-dest", ignore_errors=True)
        shutil.rmtree(self.work / "sdk-dest", ignore_errors=True)
        self.record(case=f"5 cp -r {n} small files, {self.args.small_latency_ms:g} ms latency", unit="s",
                    size_bytes=total, wfs=summary(res["wfs"]), competitor=summary(res["comp"]),
                    competitor_label=f"SDK File.download loop, wandb {sdk.version}",
                    ratio=statistics.median(res["wfs"]) / statistics.median(res["comp"]),
                    ratio_def="time wfs / SDK", goal="<= 0.2", goal_op="le", goal_value=0.2,
                    latency_ms=self.args.small_latency_ms,
                    wfs_counts=res["wfs_counts"], competitor_counts=res["comp_counts"], daemon_peak_rss=max(res["rss"]))

    # --- case 6 -----------------------------------------------------------
    def case_rss(self) -> None:
        self.server.latency(self.args.latency_ms)
        per_size = {}
        for run_id, name in (("big", "big.bin"), ("stream", "stream.bin")):
            spec = self.runs[run_id][name]
            peaks, hwms, secs_list, cnts = [], [], [], []
            for _ in range(self.prof["stream_rounds"]):
                m = self.mount()
                path = self.run_path(m, run_id, name)
                os.stat(path)
                base = m.status()
                self.server.reset()
                with RssSampler(m) as sampler:
                    secs, _ = timed(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                cnts.append(counts(self.server.quiet_stats(settle=0.2)))
                hwms.append(m.peak_rss())
                peaks.append(sampler.max_rss)
                secs_list.append(secs)
                check_file(path, spec, f"case 6 stream of {name}")
                m.stop()
                self.drop_cache_dir(m)
            per_size[spec["size"]] = {"vmhwm": max(hwms), "sampled_max_rss": max(peaks),
                                      "rss_after_mount": base.get("VmRSS", 0),
                                      "mib_per_s": summary([spec["size"] / s / MIB for s in secs_list]),
                                      "wfs_counts": cnts}
        big, stream = self.prof["big"], self.prof["stream"]
        peak = per_size[stream]["vmhwm"]
        self.record(case=f"6 daemon peak RSS streaming {stream / GIB:g} GiB", unit="MB",
                    wfs={"median": peak / 1e6, "min": peak / 1e6, "max": peak / 1e6},
                    competitor={"median": per_size[big]["vmhwm"] / 1e6, "min": per_size[big]["vmhwm"] / 1e6,
                                "max": per_size[big]["vmhwm"] / 1e6},
                    competitor_label=f"same daemon streaming {big / GIB:g} GiB (flatness)",
                    ratio=peak / per_size[big]["vmhwm"], ratio_def="peak RSS at stream size / at big size (flat = 1.0)",
                    goal="<= 150 MB", goal_op="rss_le", goal_value=150e6, daemon_peak_rss=peak,
                    per_size={str(k): v for k, v in per_size.items()},
                    wfs_counts=per_size[stream]["wfs_counts"])


# ------------------------------------------------------------------ report
def met(entry: dict) -> bool | None:
    op, value = entry.get("goal_op"), entry.get("goal_value")
    if op == "ge":
        return entry["ratio"] >= value
    if op == "le":
        return entry["ratio"] <= value
    if op == "bytes_le":
        return entry["fetched_bytes_max"] <= value
    if op == "rss_le":
        return entry["daemon_peak_rss"] <= value
    return None


def fmt_num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def fmt_summary(s: dict, unit: str) -> str:
    if not s:
        return "-"
    return f"{fmt_num(s['median'])} [{fmt_num(s['min'])}–{fmt_num(s['max'])}] {unit}"


def med_counts(runs: list[dict] | None, key: str) -> int | None:
    if not runs:
        return None
    return int(statistics.median(c[key] for c in runs))


def table(results: list[dict]) -> str:
    head = ["case", "wfs median [min–max]", "competitor median [min–max]", "ratio", "goal", "met?",
            "graphql req wfs/comp", "byte req wfs (url+storage)/comp", "bytes fetched wfs/comp", "daemon peak RSS"]
    rows = []
    for e in results:
        if "error" in e:
            rows.append([e["case"], "ERROR: " + " ".join(e["error"].split())[-160:]] + [""] * (len(head) - 2))
            continue

        def pair(key):
            a, b = med_counts(e.get("wfs_counts"), key), med_counts(e.get("competitor_counts"), key)
            return a, b

        g = pair("graphql_requests")
        u = pair("file_url_requests")
        s = pair("storage_requests")
        b = pair("bytes_served")
        byte_req = f"{(u[0] or 0) + (s[0] or 0)}" + (f"/{(u[1] or 0) + (s[1] or 0)}" if u[1] is not None else "")
        fetched = f"{(b[0] or 0) / MIB:.1f} MiB" + (f"/{(b[1] or 0) / MIB:.1f} MiB" if b[1] is not None else "")
        if not e.get("wfs_counts"):
            byte_req = fetched = "-"
        ok = met(e)
        rss = e.get("daemon_peak_rss")
        rows.append([
            e["case"], fmt_summary(e["wfs"], e["unit"]),
            fmt_summary(e["competitor"], e["unit"]) + f" ({e['competitor_label']})",
            f"{e['ratio']:.3g}", e["goal"], {True: "yes", False: "NO", None: "-"}[ok],
            "-" if g[0] is None else f"{g[0]}" + (f"/{g[1]}" if g[1] is not None else ""), byte_req, fetched,
            f"{rss / 1e6:.0f} MB" if rss else "-",
        ])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict:
    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = f"{int(fh.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        import mfusepy  # noqa: PLC0415

        mfusepy_v = getattr(mfusepy, "__version__", "?")
    except Exception:
        mfusepy_v = "?"
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "libfuse": cmd("fusermount3", "--version"),
            "mfusepy": mfusepy_v, "curl": cmd("curl", "--version").splitlines()[0] if shutil.which("curl") else "missing",
            "git": cmd("git", "-C", str(ROOT), "describe", "--always", "--dirty")}


# -------------------------------------------------------------------- main
CASES = {"1": "case_big_read", "2": "case_big_read", "3": "case_head", "4": "case_ls", "5": "case_cp", "6": "case_rss"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 2 rounds (CI; under 2 minutes)")
    p.add_argument("--rounds", type=int, default=0, help="A/B rounds per case (default 3, quick 2)")
    p.add_argument("--cases", default="1,3,4,5,6", help="comma list of cases (1 includes 2)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="latency per request in cases 1-4 and 6")
    p.add_argument("--small-latency-ms", type=float, default=20.0, help="latency per request in case 5")
    p.add_argument("--out", default=str(ROOT / "bench-results.json"))
    p.add_argument("--workdir", default=None, help="where data, caches and mounts go (default: a temp dir)")
    p.add_argument("--no-drop-caches", dest="drop_caches", action="store_false",
                   help="never write /proc/sys/vm/drop_caches (only used when root)")
    p.add_argument("--no-curl", action="store_true", help="use the Python requests fallback even if curl exists")
    p.add_argument("--daemon-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the wfs daemon only, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    return p.parse_args(argv)


def _interrupt(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    prof = profile(args.quick)
    work = Path(tempfile.mkdtemp(prefix="wfs-bench-", dir=args.workdir))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    bench = Bench(args, prof, work)
    started = time.time()
    interrupted = False
    try:
        bench.setup()
        wanted = []
        for c in args.cases.split(","):
            fn = CASES.get(c.strip())
            if fn and fn not in wanted:
                wanted.append(fn)
        for fn in wanted:
            bench.run_case(getattr(bench, fn))
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted, cleaning up", file=sys.stderr)
    except Exception:
        traceback.print_exc()
        bench.failed = True
    finally:
        if getattr(bench, "sdk", None) is not None:
            bench.sdk.stop()
        PROCS.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"bench: work dir kept at {work}", file=sys.stderr)
    if interrupted:
        return 130
    for e in bench.results:
        if "error" not in e:
            e["met"] = met(e)
    out = {"command": " ".join([Path(sys.executable).name, "scripts/bench.py", *(argv if argv is not None else sys.argv[1:])]),
           "quick": args.quick, "profile": prof, "rounds": bench.rounds, "latency_ms": args.latency_ms,
           "small_latency_ms": args.small_latency_ms, "drop_caches": bench.drop, "daemon_env": args.daemon_env,
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
           "seconds": round(time.time() - started, 1), "machine": machine(), "results": bench.results}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print()
    print(table(bench.results))
    print(f"\nrounds={bench.rounds} latency={args.latency_ms:g} ms (case 5: {args.small_latency_ms:g} ms) "
          f"drop_caches={'yes' if bench.drop else 'no'}; {out['seconds']} s; results in {args.out}")
    if bench.failed:
        print("bench: FAILED (a case crashed or read wrong bytes; see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
