"""The store CLI end to end, in real subprocesses: ingest, search, store stats/list/delete/vacuum/mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lacy_mlx.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "lacy_mlx", *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    if ok:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "curie.md").write_text("# Marie Curie\n\nMarie Curie was born in Warsaw in 1867.", encoding="utf-8")
    (d / "sub" / "ada.txt").write_text("Ada Lovelace wrote the first program.", encoding="utf-8")
    (d / "facts.jsonl").write_text(
        json.dumps({"id": "rhine", "text": "The Rhine flows through Basel.", "lang": "de"}) + "\n"
        + "not json\n" + json.dumps({"text": "Turing worked at Bletchley Park.", "lang": "en"}) + "\n",
        encoding="utf-8")
    (d / "broken.txt").write_bytes(b"\xff\xfe bad bytes \xc3")
    return d


def test_ingest_search_and_maintain(tmp_path, corpus):
    db = str(tmp_path / "kb.db")
    first = cli("ingest", str(corpus), "--db", db, "--embedder", "hashed-ngram-v1:128", "--quiet")
    assert "4 added" in first.stdout and "1 skipped" not in first.stdout
    assert "broken.txt: not UTF-8" in first.stderr and "facts.jsonl:2: not valid JSON" in first.stderr
    again = cli("ingest", str(corpus), "--db", db, "--quiet")
    assert "0 added" in again.stdout and "4 unchanged" in again.stdout

    table = cli("search", "Where was Marie Curie born?", "--db", db, "-k", "2").stdout
    assert table.splitlines()[1].split()[2] == "Marie"
    hits = [json.loads(line) for line in cli("search", "Basel Rhine", "--db", db, "--json", "--exact").stdout.splitlines()]
    assert hits[0]["external_id"] == "rhine" and hits[0]["metadata"]["lang"] == "de" and len(hits) == 4
    filtered = cli("search", "anything", "--db", db, "--json", "--filter", "lang=en").stdout.splitlines()
    assert [json.loads(x)["text"] for x in filtered] == ["Turing worked at Bletchley Park."]

    stats = json.loads(cli("store", "stats", "--db", db, "--json").stdout)
    assert stats["documents"] == 4 and stats["embedder"] == "hashed-ngram-v1:128"
    assert "rhine" in cli("store", "list", "--db", db).stdout
    assert "deleted 1" in cli("store", "delete", "rhine", "--db", db).stdout
    missing = cli("store", "delete", "rhine", "--db", db, ok=False)
    assert missing.returncode == 1 and "no document with external id rhine" in missing.stderr
    assert "vacuumed" in cli("store", "vacuum", "--db", db).stdout
    assert "exact" in cli("store", "mode", "exact", "--db", db).stdout
    assert json.loads(cli("store", "stats", "--db", db, "--json").stdout)["documents"] == 3


def test_errors_are_one_clear_line(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00" * 100)
    out = cli("search", "x", "--db", str(junk), ok=False)
    assert out.returncode == 1 and out.stderr.startswith("lacy-mlx: error:") and "not a lacy store" in out.stderr
    out = cli("search", "x", "--db", str(tmp_path / "absent.db"), ok=False)
    assert "there is no store" in out.stderr and "Traceback" not in out.stderr


def test_default_embedder_end_to_end(tmp_path):
    """The bundled sample documents through the default embedder (the MLX encoder when installed)."""
    db = str(tmp_path / "demo.db")
    cli("ingest", str(ROOT / "examples" / "docs"), "--db", db, "--quiet")
    hits = [json.loads(x) for x in cli("search", "Where was Marie Curie born?", "--db", db, "--json").stdout.splitlines()]
    assert hits[0]["title"] == "Marie Curie"


def test_every_command_is_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, p in sub.choices.items():
        assert f"lacy-mlx {name}" in readme, f"`lacy-mlx {name}` is not documented in README.md"
        assert p.description or p.format_help()


def test_search_modes(tmp_path, corpus):
    db = str(tmp_path / "kb.db")
    cli("ingest", str(corpus), "--db", db, "--embedder", "hashed-ngram-v1:128", "--quiet")
    hits = [json.loads(x) for x in cli("search", "1867", "--db", db, "--mode", "keyword", "--json").stdout.splitlines()]
    assert [h["title"] for h in hits] == ["Marie Curie"] and hits[0]["bm25"] > 0 and hits[0]["cosine"] is None
    hybrid = [json.loads(x) for x in cli("search", "Bletchley 1867", "--db", db, "--json", "-k", "2").stdout.splitlines()]
    assert {h["text"][:6] for h in hybrid} == {"Turing", "# Mari"} and all(h["cosine"] is not None for h in hybrid)
    out = cli("search", "?! ()", "--db", db, "--mode", "keyword", ok=False)
    assert out.returncode == 1 and "no words to match by keyword" in out.stderr and "Traceback" not in out.stderr
