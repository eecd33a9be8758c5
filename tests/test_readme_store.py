"""The README's store examples, run as written (in a scratch folder holding a copy of examples/)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _section_blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The knowledge store", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_readme_store_examples_run_as_written(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    (bash,) = _section_blocks("bash")
    commands = [line.split("  #")[0].strip() for line in bash.splitlines() if line.strip()]
    assert len(commands) >= 8 and all(c.startswith("lacy-mlx ") for c in commands)
    outputs = []
    for cmd in commands:
        argv = [sys.executable, "-m", "lacy_mlx", *shlex.split(cmd)[1:]]
        out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        assert out.returncode == 0, (cmd, out.stderr[-2000:])
        outputs.append(out.stdout)
    assert "Marie Curie" in outputs[1].splitlines()[1]  # the search finds her paragraph first
    (python,) = _section_blocks("python")
    out = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "curie" in out.stdout and "'documents'" in out.stdout
