"""benchmarks/encoder.py end to end on a tiny BERT: the torch worker protocol and the JSON record."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_encoder_tiny import _build

pytest.importorskip("torch")
pytest.importorskip("transformers")


BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "encoder.py"


def test_benchmark_runs_torch_in_a_worker(tmp_path: Path) -> None:
    _build(tmp_path / "tiny", pooling="mean")
    run = subprocess.run(
        [sys.executable, str(BENCH), "--model", str(tmp_path / "tiny"), "--n", "6", "--repeats", "1",
         "--threads", "1"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["torch_process"] == "worker" and record["threads"] == 1
    assert record["torch_cpu_sent_per_s"] > 0 and record["mlx_cpu_sent_per_s"] > 0
    assert record["min_cosine"] > 0.9999  # the worker embedded the same texts with the same model
