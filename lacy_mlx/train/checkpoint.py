"""Training checkpoints with exact resume.

``out_dir/checkpoints/step_XXXXXXX/`` holds ``weights.safetensors`` (the whole trained tree, float32),
``optimizer.safetensors`` (``tree_flatten(optimizer.state)``: moments, step, learning rate),
and ``state.json`` (update step, data position). MLX's global random key cannot be set from a
saved value, so the loop reseeds it from ``(seed, step)`` at every checkpoint step, in the
straight run and after a resume alike (:func:`reseed`).
``out_dir/checkpoints/latest`` names the newest one; older ones beyond ``keep`` are removed.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from lacy_mlx.errors import LacyError


@dataclass
class Resumed:
    step: int
    position: dict


def save_checkpoint(out_dir: str | Path, *, model: nn.Module, optimizer: optim.Optimizer, step: int,
                    position: dict, keep: int = 2) -> Path:
    """Write the checkpoint of update ``step``; returns its folder."""
    root = Path(out_dir) / "checkpoints"
    folder = root / f"step_{step:07d}"
    tmp = root / f".tmp_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "weights.safetensors"), dict(tree_flatten(model.parameters())))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    (tmp / "state.json").write_text(json.dumps({"step": step, "position": position}) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a crash mid-write leaves only a .tmp folder, never a half checkpoint
    (root / "latest").write_text(folder.name + "\n")
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def reseed(seed: int, step: int) -> None:
    """Set MLX's global random state from ``(seed, step)``: identical in straight and resumed runs."""
    mx.random.seed((seed * 1_000_003 + step) % (1 << 32))


def load_checkpoint(out_dir: str | Path, *, model: nn.Module, optimizer: optim.Optimizer) -> Resumed:
    """Restore the newest checkpoint into ``model`` and ``optimizer`` (initialised); call :func:`reseed` after."""
    root = Path(out_dir) / "checkpoints"
    latest = root / "latest"
    if not latest.is_file():
        raise LacyError(f"no checkpoint under {root}: train without --resume first")
    folder = root / latest.read_text().strip()
    model.load_weights(str(folder / "weights.safetensors"))
    opt_state = mx.load(str(folder / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(opt_state.items()))
    state = json.loads((folder / "state.json").read_text())
    mx.eval(model.parameters(), optimizer.state)
    return Resumed(int(state["step"]), dict(state["position"]))
