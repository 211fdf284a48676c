"""Demo data: a folder tree of runs that look like real W&B runs.

``build_sample(dir)`` writes ``dir/<entity>/<project>/<run_id>/...`` in the
layout ``Store.load_tree`` reads. Everything is deterministic (fixed seeds and
dates) except the running run, whose times are "now". Images are real PNGs
(valid CRCs), tables use W&B's ``{"columns": [...], "data": [[...]]}`` format,
and the big checkpoint is a ``Generated`` file declared in ``_wfs_run.json``,
so nothing large is written to disk.
"""

from __future__ import annotations

import json
import os
import random
import struct
import zlib

from wfs.testing.store import RUN_META_FILE

CHECKPOINT_BYTES = 300 * 1000 * 1000  # "a few hundred MB"

# (entity, project, run_id, display name, state, createdAt or None for "now")
RUNS = [
    ("demo-user", "mnist-classifier", "2x9k4d1a", "fluent-sun-1", "finished", "2024-03-01T10:00:00"),
    ("demo-user", "mnist-classifier", "7hq3m0zp", "wise-river-2", "finished", "2024-03-02T14:30:00"),
    ("demo-user", "mnist-classifier", "c4n8s2vt", "cosmic-wave-3", "running", None),
    ("demo-user", "llm-finetune", "q1w2e3r4", "bright-moon-1", "finished", "2024-04-10T08:15:00"),
    ("demo-team", "shared-baselines", "t5y6u7i8", "baseline-resnet", "finished", "2024-02-20T16:45:00"),
]


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A real RGB PNG with a smooth gradient (colours vary with ``seed``)."""
    rng = random.Random(seed)
    r0, g0, b0 = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(((r0 + 255 * x // max(1, width - 1)) % 256,
                           (g0 + 255 * y // max(1, height - 1)) % 256,
                           (b0 + (x + y)) % 256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b"")


def _write(path: str, data: bytes | str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def _run_files(index: int, run_id: str, display: str, state: str) -> dict[str, bytes | str]:
    rng = random.Random(index)
    lr = [0.001, 0.0003, 0.01, 0.0001, 0.003][index % 5]
    epochs = 10 + index
    losses = [round(2.3 * (0.8 ** e) + rng.random() * 0.05, 4) for e in range(epochs)]
    summary = {"loss": losses[-1], "accuracy": round(0.9 + rng.random() * 0.09, 4),
               "epoch": epochs - 1, "_step": epochs * 100, "_runtime": 600 + index * 37}
    files: dict[str, bytes | str] = {
        "config.yaml": (
            "wandb_version: 1\n\n_wandb:\n  desc: null\n  value:\n    python_version: 3.11.8\n"
            f"batch_size:\n  desc: null\n  value: {32 * (index + 1)}\n"
            f"epochs:\n  desc: null\n  value: {epochs}\n"
            f"learning_rate:\n  desc: null\n  value: {lr}\n"
            "optimizer:\n  desc: null\n  value: adam\n"
        ),
        "wandb-summary.json": json.dumps(summary),
        "wandb-metadata.json": json.dumps({
            "os": "Linux-6.1.0-x86_64-with-glibc2.36", "python": "3.11.8",
            "host": f"gpu-node-{index}", "program": "train.py", "args": ["--epochs", str(epochs)],
            "startedAt": "2024-03-01T10:00:00.000000", "gpu": "NVIDIA A100-SXM4-40GB", "gpu_count": 1,
        }, indent=2),
        "output.log": "".join(
            f"epoch {e:3d} | loss {loss:.4f} | lr {lr}\n" for e, loss in enumerate(losses)
        ) + ("" if state == "running" else "Training finished.\n"),
        "requirements.txt": "numpy==1.26.4\ntorch==2.2.1\nwandb==0.16.4\npillow==10.2.0\n",
        "media/table/predictions_0_1a2b3c.table.json": json.dumps({
            "_type": "table",
            "columns": ["id", "label", "prediction", "confidence"],
            "data": [[i, i % 10, (i + (i % 7 == 0)) % 10, round(0.5 + rng.random() / 2, 3)] for i in range(20)],
            "ncols": 4, "nrows": 20,
        }),
    }
    for step in range(3):
        files[f"media/images/samples_{step * 100}_{run_id[:4]}{step}.png"] = png_bytes(32 + 8 * step, 24, seed=index * 10 + step)
    return files


def build_sample(root: str) -> str:
    """Write the demo tree under ``root`` and return ``root``."""
    for index, (entity, project, run_id, display, state, created) in enumerate(RUNS):
        run_dir = os.path.join(root, entity, project, run_id)
        for name, data in _run_files(index, run_id, display, state).items():
            _write(os.path.join(run_dir, *name.split("/")), data)
        meta: dict = {"state": state, "displayName": display,
                      "config": {"learning_rate": {"value": 0.001}, "epochs": {"value": 10 + index}},
                      "summaryMetrics": {"epoch": 9 + index}, "tags": ["demo"]}
        if created:
            meta["createdAt"] = created
        if index == 0:
            # Names users trip over: spaces + non-ASCII, and an empty file.
            _write(os.path.join(run_dir, "notes", "résumé des essais – v1.txt"), "Première série d'essais.\n")
            _write(os.path.join(run_dir, "empty.txt"), b"")
            meta["generated"] = {"files/model.ckpt": {"size": CHECKPOINT_BYTES, "seed": 42}}
        _write(os.path.join(run_dir, RUN_META_FILE), json.dumps(meta, indent=2))
    return root
