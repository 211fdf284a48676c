"""The competitor side of ``scripts/bench.py``: the wandb SDK, driven over stdin.

Runs as a long-lived subprocess so ``import wandb`` (about a second) is paid
once, not per round. Reads one JSON command per line and answers one JSON line:

- ``{"op": "api"}``: build a fresh ``wandb.Api`` (no state kept between rounds);
  the bench resets the server's counters afterwards, so construction is not counted.
- ``{"op": "list", "path": "e/p/r", "per_page": 50}``: time ``api.run(path)`` plus
  iterating ``run.files(per_page=...)`` and touching each file's name and size.
- ``{"op": "download", "path": ..., "root": DIR, "per_page": 50}``: time the usual
  script, ``for f in run.files(): f.download(root=DIR, replace=True)``.
- ``{"op": "quit"}``.

The environment (``WANDB_BASE_URL``, ``WANDB_API_KEY``, temp ``WANDB_CONFIG_DIR``
etc.) is set by the bench; nothing of the user's W&B settings is read.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    import wandb  # noqa: PLC0415 - the import is the point of this process

    base_url = os.environ["WANDB_BASE_URL"]
    api_key = os.environ["WANDB_API_KEY"]
    api = None
    out = sys.stdout
    print(json.dumps({"ready": True, "wandb": wandb.__version__}), file=out, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "quit":
                break
            if op == "api":
                api = wandb.Api(api_key=api_key, overrides={"base_url": base_url}, timeout=120)
                reply = {"ok": True}
            elif op == "list":
                t0 = time.perf_counter()
                run = api.run(cmd["path"])
                count = total = 0
                for f in run.files(per_page=cmd.get("per_page", 50)):
                    _ = f.name
                    total += int(f.size or 0)
                    count += 1
                reply = {"ok": True, "seconds": time.perf_counter() - t0, "count": count, "total_bytes": total}
            elif op == "download":
                t0 = time.perf_counter()
                run = api.run(cmd["path"])
                count = 0
                for f in run.files(per_page=cmd.get("per_page", 50)):
                    fh = f.download(root=cmd["root"], replace=True)
                    fh.close()
                    count += 1
                reply = {"ok": True, "seconds": time.perf_counter() - t0, "count": count}
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the bench, which marks the case failed
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), file=out, flush=True)
    try:
        wandb.teardown()
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    # The SDK may print to stdout; keep our protocol on a private copy of fd 1.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = proto
    raise SystemExit(main())
