"""The QA runner: summaries on hand-made answers, and `lacy-mlx qa` end to end on a tiny model."""
from __future__ import annotations

import json

import pytest

from lacy_mlx.cli import main
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import InputError
from lacy_mlx.qa import Question
from lacy_mlx.qa_run import Answer, QAReport, answer_questions, table
from lacy_mlx.store import Store


def _answer(qid: str, correct: bool, calls: int, tokens: int = 10) -> Answer:
    return Answer(Question(qid, "?", "x"), "text", correct, calls, tokens, 1.0 + calls, ())


def test_summary_counts_accuracy_and_calls():
    report = QAReport("gate", {"gate": "entropy", "entropy_threshold": 2.5},
                      (_answer("a", True, 1), _answer("b", False, 0), _answer("c", True, 2, tokens=20)))
    s = report.summary()
    assert s["accuracy"] == pytest.approx(2 / 3) and s["calls_per_answer"] == 1.0
    assert s["answers_with_calls"] == pytest.approx(2 / 3) and s["call_rate"] == pytest.approx(3 / 40)
    assert s["missed"] == ["b"] and s["seconds_per_answer"] == 2.0
    assert "| gate | entropy_threshold=2.5 | 0.667 (2/3) | 1.00 | 0.67 |" in table([s])


def test_retrieving_modes_need_a_store(tiny_dir):
    import lacy_mlx

    lacy = lacy_mlx.load(tiny_dir)
    with pytest.raises(InputError, match="store"):
        answer_questions(lacy, [Question("a", "?", "x")], mode="first")
    with pytest.raises(InputError, match="mode"):
        answer_questions(lacy, [Question("a", "?", "x")], mode="sometimes")


def test_qa_command_end_to_end(tiny_dir, tmp_path, capsys):
    db = tmp_path / "kb.db"
    with Store.open(db, embedder=HashedEmbedder(dim=64)) as s:
        s.add_documents([{"external_id": "turing", "title": "Alan Turing", "text": "Alan Turing was born in London."}])
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"id": "q1", "question": "Where was Alan Turing born?", "answer": "London"},
        {"id": "q2", "question": "When was he born?", "answer": "1912"},
    ]) + "\n")
    rc = main(["qa", "--model", str(tiny_dir), "--db", str(db), "--questions", str(questions), "--max-tokens", "4",
               "--gate", "entropy", "--entropy-threshold", "0", "--sweep", "0,100", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(s["mode"], s.get("entropy_threshold")): s for s in out["summaries"]}
    assert set(rows) == {("alone", None), ("first", None), ("gate", 0.0), ("gate", 100.0)}
    assert rows[("alone", None)]["calls_per_answer"] == 0 and rows[("first", None)]["calls_per_answer"] == 1
    assert rows[("gate", 0.0)]["calls_per_answer"] >= 1 and rows[("gate", 100.0)]["calls_per_answer"] == 0
    assert all(s["n"] == 2 for s in out["summaries"])
