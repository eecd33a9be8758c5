"""The trainer end to end on the tiny preset: loss falls, exact resume, loadable output, query tower."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from lacy_mlx.query_tower import QueryTower
from lacy_mlx.runtime import RetrievalDelegate
from lacy_mlx.tokens import read_lacy_section
from lacy_mlx.train.bpe import load_tokenizer
from lacy_mlx.train.config import preset
from lacy_mlx.train.corpus import load_people
from lacy_mlx.train.latent import fact_queries, recall_at_k
from lacy_mlx.train.prepare import make_embedder
from lacy_mlx.train.trainer import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    result = train(preset("tiny", progress=False), out)
    return out, result


def test_tiny_preset_loss_falls(tiny_run):
    out, result = tiny_run
    first, last = result.log[0], result.log[-1]
    assert result.step == 40
    assert last["lm_loss"] < first["lm_loss"] - 0.8
    assert last["tower_loss"] < first["tower_loss"]
    assert 0.0 < last["call_rate"] < 0.6
    lines = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [r["step"] for r in result.log]


def test_output_folder_loads_with_mlx_lm_and_lacy(tiny_run):
    from mlx_lm import load

    out, _ = tiny_run
    model, tokenizer = load(str(out))
    section = read_lacy_section(out)
    vocab = tokenizer.get_vocab()
    assert (section.call_token_id, section.evidence_start_id, section.evidence_end_id) == (
        vocab["<CALL>"], vocab["<EVIDENCE>"], vocab["</EVIDENCE>"])
    ids = tokenizer.encode("Anna Berg was born in")
    assert ids[0] == tokenizer.eos_token_id  # prompts start like training documents
    logits = model(mx.array(ids)[None])
    assert logits.shape == (1, len(ids), len(vocab))
    tower = QueryTower.load(out)
    assert tower is not None and tower.embed_dim == 128
    # The model's own retrieval default (lacy.retrieval.k) applies unless the caller sets k.
    assert section.retrieval == {"k": 1}
    import lacy_mlx

    class Shelf:  # only the delegate's wiring is under test here; the real store is tested elsewhere
        dim = 128

        def search(self, *a, **kw):
            return []

    assert lacy_mlx.load(str(out), delegate=RetrievalDelegate(Shelf(), query="latent")).delegate.k == 1
    assert lacy_mlx.load(str(out), delegate=RetrievalDelegate(Shelf(), k=4)).delegate.k == 4
    assert json.loads((out / "config.json").read_text())["lacy"]["query_tower"]["embedder"] == "hashed-ngram-v1:128"


def test_query_tower_recall_on_heldout_people(tiny_run):
    from mlx_lm import load

    out, _ = tiny_run
    lm, _ = load(str(out))
    held = load_people(out / "data" / "heldout.json")
    hidden, gold, records = fact_queries(lm, load_tokenizer(out), held)
    table = make_embedder("hashed-ngram-v1:128").embed_batch([r["text"] for r in records])
    recall = recall_at_k(QueryTower.load(out), hidden, gold, table, k=5)
    chance = 5 / len(records)
    assert recall > 3 * chance, (recall, chance)


def _exported(out: Path) -> dict:
    return {k: np.array(v) for k, v in mx.load(str(out / "model.safetensors")).items()}


def test_resume_continues_exactly(tmp_path):
    cfg = preset("tiny", progress=False, steps=6, save_every=3, log_every=1, people=24, heldout_people=4)
    straight = train(cfg, tmp_path / "a")
    first = train(cfg, tmp_path / "b", stop_at=3)
    assert first.step == 3 and not (tmp_path / "b" / "model.safetensors").exists()
    second = train(cfg, tmp_path / "b", resume=True)
    assert second.step == 6
    assert [r["loss"] for r in first.log + second.log] == [r["loss"] for r in straight.log]
    a, b = _exported(tmp_path / "a"), _exported(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cli_and_lora_finetune(tiny_run, tmp_path):
    from mlx_lm import load

    from lacy_mlx.cli import main

    base, _ = tiny_run
    out = tmp_path / "ft"
    rc = main(["train", "--preset", "tiny", "--out", str(out), "--set", f"init_from={json.dumps(str(base))}",
               "--set", "lora_rank=4", "--set", "steps=3", "--set", "progress=false"])
    assert rc == 0
    model, tok = load(str(out))
    assert read_lacy_section(out).call_token_id == tok.get_vocab()["<CALL>"]
    before, after = _exported(base), _exported(out)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed and all("layers" in k for k in changed)  # LoRA fused into the blocks only


def test_two_process_data_parallel(tmp_path):
    launcher = Path(sys.executable).parent / "mlx.launch"
    if not launcher.exists():
        pytest.skip("mlx.launch is not installed with this Python")
    out = tmp_path / "dp"
    port = 20000 + os.getpid() % 20000
    cmd = [str(launcher), "-n", "2", "--backend", "ring", "--starting-port", str(port), "--",
           sys.executable, "-m", "lacy_mlx", "train", "--preset", "tiny", "--out", str(out),
           "--set", "steps=4", "--set", "log_every=2", "--set", "progress=false", "--set", "people=16",
           "--set", "heldout_people=2", "--set", "tower_weight=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0 and "ring" in proc.stderr.lower() and "not available" in proc.stderr.lower():
        pytest.skip(f"the ring backend is unavailable here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all(np.isfinite(r["loss"]) for r in log)
    # Both ranks printed the same final summary: their weights stayed in sync.
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 2 and json.loads(summaries[0])["loss"] == json.loads(summaries[1])["loss"]
    assert (out / "model.safetensors").is_file()
    shutil.rmtree(out)


def test_factscore_evaluation_mechanics(tiny_run):
    from lacy_mlx.train.evaluate import evaluate

    out, _ = tiny_run
    # Threshold 0: the cascade calls at once (then at most once per sentence), by tower and by text.
    for query in ("latent", "text"):
        report = evaluate(out, per_group=2, threshold=0.0, max_tokens=12, query=query, frequent_min=3)
        alone, forced = report.runs["alone"], report.runs["cascade"]
        assert set(forced) == {"frequent", "seen once", "never seen"}
        assert all(not b.calls for bios in alone.values() for b in bios)
        bios = [b for group in forced.values() for b in group]
        calls = sum(len(b.calls) for b in bios)
        assert len(bios) <= calls <= sum(b.tokens for b in bios)
        assert all("<EVIDENCE>" not in b.text for b in bios)  # evidence is context, not output
        m = report.summary()["cascade"]["seen once"]
        assert 0.0 <= m["leakage"] <= 1.0 and 0.0 <= m["call_precision"] <= 1.0 and m["tokens_per_s"] > 0
