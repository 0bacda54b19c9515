"""Smoke test of bench/attack_speed.py: it runs, prints its table and writes its JSON.

Only the shape of the output is checked; timings are never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "attack_speed.py"
TIMEOUT_S = 300


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_builtin_batch1_prints_table(tmp_path):
    record_path = tmp_path / "attack_speed.json"

    completed = run_script(
        "--steps", "1", "--models", "builtin", "--batch-sizes", "1", "--repeats", "1",
        "--threads", "1", "--json", str(record_path),
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert any(line.startswith("| model | input | loop | batch |") for line in lines)
    assert any(line.startswith("| builtin | 1x32x32 | plain | 1 | 1 |") for line in lines)
    assert any(line.startswith("| builtin | 1x32x32 | engine | 1 | 1 |") for line in lines)
    assert any(line.startswith("| model | batch | per image ms | surrogate map") for line in lines)
    assert any(line.startswith("| builtin | 1 |") for line in lines)
    assert any(line.startswith("speed target: not checked") for line in lines)
    assert any(line.startswith("memory target: largest peak") for line in lines)

    record = json.loads(record_path.read_text(encoding="utf-8"))
    rows = {row["loop"]: row for row in record["configurations"]}
    assert set(rows) == {"plain", "engine"}
    for row in rows.values():
        assert row["iteration_s"] > 0
        assert row["forward_s"] > 0
        assert row["peak_memory_bytes"] > 0
    assert rows["engine"]["vs_plain"] > 0
    assert rows["engine"]["per_image_direction_s"] > 0
    assert rows["engine"]["per_image_evaluate_s"] > 0
    assert "vs_plain" not in rows["plain"]
    assert record["machine"]["threads"] == 1
    assert record["targets"]["speed"] == {}


def test_unknown_model_is_rejected():
    completed = run_script("--models", "vgg16")

    assert completed.returncode == 2
    assert "invalid choice: 'vgg16'" in completed.stderr
