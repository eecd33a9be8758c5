"""The QA scorer on hand-made cases, and the bundled question set against the bundled documents."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lacy_mlx.errors import InputError
from lacy_mlx.ingest import iter_documents
from lacy_mlx.qa import Question, answer_matches, answer_tokens, document_name, load_questions, score

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("text, answer, aliases", [
    ("She was born in 1815.", "1815", ()),
    ("born on 10 December 1815 in London", "1815", ()),
    ("It happened in WARSAW!", "Warsaw", ()),
    ("Born in Warsaw, Poland", "warsaw,  poland", ()),
    ("about 2850 km long", "2,850", ()),
    ("about 2,850 km long", "2850", ()),
    ("a height of 5\u202f895 metres", "5,895", ()),     # a narrow no-break space
    ("It rises to 5895m.", "5895 m", ()),
    ("on the 10th of December", "10", ()),
    ("the composer Dvorak", "Dvořák", ()),
    ("Antonín Dvořák wrote it", "Antonin Dvorak", ()),
    ("Marie Sklodowska", "Skłodowska", ()),
    ("the element is cobalt 60", "cobalt-60", ()),
    ("Answer: Sanremo, Italy", "San Remo", ("Sanremo",)),
    ("Noether's theorem", "Noether", ()),
    ("It measures 11.6 kilometres", "11.6", ()),
])
def test_matches(text, answer, aliases):
    assert answer_matches(text, answer, aliases)


@pytest.mark.parametrize("text, answer, aliases", [
    ("in the year 18150", "1815", ()),                  # digits match as whole numbers
    ("born January 26, 189rach", "1895", ()),           # the 135M model's own near miss
    ("189rach", "1890", ("1891",)),
    ("It measures 11.6 kilometres", "11", ()),
    ("He was born in Budapest", "Buda", ()),            # whole words only
    ("the city of Valletta", "Valette", ()),
    ("born in Paris", "Warsaw", ("Warsaw, Poland",)),
    ("Poland, Warsaw", "Warsaw Poland", ()),           # order matters within a span
    ("", "1815", ()),
])
def test_near_misses(text, answer, aliases):
    assert not answer_matches(text, answer, aliases)


def test_tokens_and_bad_gold():
    assert answer_tokens("  Coyoacán, MEXICO-City! 1,729th ") == ("coyoacan", "mexico", "city", "1729")
    with pytest.raises(InputError, match="no letters or digits"):
        answer_matches("anything", "?!")


def test_score_and_question():
    q1 = Question(id="a", question="Born?", answer="1815", aliases=("10 December 1815",))
    q2 = Question(id="b", question="Where?", answer="Warsaw")
    assert q1.golds == ("1815", "10 December 1815") and q1.matches("in 1815")
    result = score([(q1, "In 1815."), (q2, "In Paris."), (q1, "18150")])
    assert result == {"n": 3, "correct": 1, "accuracy": 1 / 3, "missed": ["b", "a"]}
    with pytest.raises(InputError, match="no results"):
        score([])


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('["q"]', "expected a JSON object"),
    ('{"id": "x", "question": "Q?"}', "'answer' must be a non-empty string"),
    ('{"id": "x", "question": "Q?", "answer": "A", "alias": ["B"]}', "unknown key"),
    ('{"id": "x", "question": "Q?", "answer": "A", "aliases": "B"}', "list of strings"),
    ('{"id": "x", "question": "Q?", "answer": "--"}', "no letters or digits"),
    ('{"id": "x", "question": "Q?", "answer": "A", "doc": ""}', "document name"),
])
def test_load_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "ok", "question": "Q?", "answer": "A"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        load_questions(path)
    assert f"{path}:3" in str(err.value)


def test_load_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such question file"):
        load_questions(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no questions"):
        load_questions(tmp_path / "empty.jsonl")
    row = json.dumps({"id": "x", "question": "Q?", "answer": "A"})
    (tmp_path / "dup.jsonl").write_text(row + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate question id 'x'"):
        load_questions(tmp_path / "dup.jsonl")


def test_document_name():
    assert document_name("file:///a/b/ada-lovelace.md") == "ada-lovelace.md"
    assert document_name("file:///a/b/places.jsonl#L3") == "places.jsonl#L3"
    assert document_name("file:///a/my%20notes.md") == "my notes.md"
    assert document_name("place-warsaw") == "place-warsaw" and document_name(None) is None


def test_bundled_questions_are_answered_by_their_documents():
    """Every question names a bundled document, and its answer (or an alias) is written in it."""
    docs = {document_name(d.external_id): d.text for d in iter_documents([EXAMPLES / "docs"])}
    questions = load_questions(EXAMPLES / "questions.jsonl")
    assert len(questions) >= 40
    for q in questions:
        assert q.doc in docs, f"{q.id}: no document {q.doc!r} in examples/docs"
        assert answer_matches(docs[q.doc], q.answer, q.aliases), f"{q.id}: {q.answer!r} is not in {q.doc}"
        # The question must need the document: its answer is not given away by the question itself.
        assert not answer_matches(q.question, q.answer, q.aliases), f"{q.id}: the question contains its answer"
