#!/usr/bin/env python3
"""`make demo`: serve sample runs from the local W&B-compatible server and mount them at ./mnt.

Leaves the server and the mount running so you can explore; `make demo-stop`
(or `python scripts/demo.py --stop`) unmounts and stops the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".demo"
MOUNTPOINT = ROOT / "mnt"
READY = STATE / "server.json"

sys.path.insert(0, str(ROOT))
from wfs.testing.server import DEMO_API_KEY, DEMO_USER  # noqa: E402


def _env(base_url: str) -> dict:
    env = dict(os.environ)
    env.update(WANDB_BASE_URL=base_url, WANDB_API_KEY=DEMO_API_KEY)
    return env


def _server_pid() -> int | None:
    try:
        return int(json.loads(READY.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def stop() -> int:
    if os.path.ismount(MOUNTPOINT):
        subprocess.run([sys.executable, "-m", "wfs", "unmount", str(MOUNTPOINT)], check=False)
        if os.path.ismount(MOUNTPOINT):
            subprocess.run(["fusermount3", "-uz", str(MOUNTPOINT)], check=False)
    pid = _server_pid()
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    print("demo stopped")
    return 0


def start() -> int:
    if os.path.ismount(MOUNTPOINT):
        print(f"the demo is already mounted at {MOUNTPOINT} (make demo-stop to stop it)")
        return 0
    STATE.mkdir(exist_ok=True)
    MOUNTPOINT.mkdir(exist_ok=True)
    READY.unlink(missing_ok=True)
    log = open(STATE / "server.log", "ab")
    subprocess.Popen(
        [sys.executable, "-m", "wfs.testing.server", "--sample", str(STATE / "data"), "--ready-file", str(READY)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    deadline = time.monotonic() + 120  # the first start writes the sample data
    while not READY.exists():
        if time.monotonic() > deadline:
            print("the local W&B server did not start; see .demo/server.log", file=sys.stderr)
            return 1
        time.sleep(0.1)
    base_url = json.loads(READY.read_text())["base_url"]
    result = subprocess.run(
        [sys.executable, "-m", "wfs", "mount", str(MOUNTPOINT), "--cache-dir", str(STATE / "cache"),
         "--log-file", str(STATE / "wfs.log")],
        env=_env(base_url),
    )
    if result.returncode != 0:
        stop()
        return result.returncode
    print(f"\nLocal W&B server: {base_url}   (user {DEMO_USER})\nMounted at {MOUNTPOINT}:\n")
    subprocess.run(["find", str(MOUNTPOINT.relative_to(ROOT)), "-maxdepth", "6"], cwd=ROOT, check=False)
    run = next((p for p in sorted((MOUNTPOINT / DEMO_USER).glob("*/*")) if (p / "config.yaml").exists()), None)
    rel = run.relative_to(ROOT) if run else f"mnt/{DEMO_USER}"
    print(f"""
Try:
  ls -l {rel}
  cat {rel}/config.yaml
  cp -r {rel}/media /tmp/media
  python3 -c "import json; print(json.load(open('{rel}/wandb-summary.json')))"
  getfattr -d {rel}/config.yaml 2>/dev/null
  .venv/bin/wfs cache stats --cache-dir .demo/cache

Stop with: make demo-stop
""")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", action="store_true", help="unmount and stop the demo server")
    args = parser.parse_args()
    return stop() if args.stop else start()


if __name__ == "__main__":
    raise SystemExit(main())
