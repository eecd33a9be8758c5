"""Package a trained run as a small, committable model folder (the embedded demo model).

Copies the model files (weights, config, tokenizer, query tower, training config) and writes a
subset of the knowledge base under ``data/``: ``ground_truth.json`` (the most frequent and some
rare training people), ``heldout.json`` (some unseen people) and ``evidence.jsonl`` (every
passage of those people: what a demo ingests into its store, small enough to embed in seconds).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from lacy_mlx.train.corpus import load_people, write_ground_truth

MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
               "query_tower.safetensors", "training_config.json")


def bundle_run(run_dir: str | Path, dest: str | Path, *, frequent: int = 60, rare: int = 100,
               heldout: int = 40) -> Path:
    """Write the demo folder ``dest`` from the training run folder ``run_dir``."""
    run, out = Path(run_dir), Path(dest)
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (run / name).is_file():
            shutil.copy(run / name, out / name)
    people = load_people(run / "data" / "ground_truth.json")
    chosen = people[:frequent] + [p for p in people if p.mentions == 1][:rare]
    unseen = load_people(run / "data" / "heldout.json")[:heldout]
    write_ground_truth(out / "data" / "ground_truth.json", chosen)
    write_ground_truth(out / "data" / "heldout.json", unseen)
    keep = {p.pid for p in chosen + unseen}
    with open(run / "data" / "evidence.jsonl", encoding="utf-8") as src, \
            open(out / "data" / "evidence.jsonl", "w", encoding="utf-8") as dst:
        for line in src:
            if json.loads(line)["metadata"]["person"] in keep:
                dst.write(line)
    return out
