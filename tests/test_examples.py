"""Every example in examples/ runs offline on tiny models (paths passed as arguments)."""
import importlib.util
import io
import sys
from pathlib import Path

import pytest
from server_fixtures import DOCS, running

import lacy_mlx
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.store import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "kb.db"
    with Store.open(path, embedder=HashedEmbedder(dim=64)) as store:
        store.add_documents(DOCS)
    return path


def test_every_example_has_a_smoke_test():
    names = {p.stem for p in EXAMPLES.glob("*.py")} - {"demo"}  # demo.py: `make demo`, tested on its own
    tested = {"chat", "ingest_and_ask", "convert_pytorch", "train_tiny", "embed_in_app", "openai_client"}
    assert names == tested
    for name in names:
        doc = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8").split('"""')[1]
        assert f"python examples/{name}.py" in doc, f"{name}.py's docstring must give its command"


def test_chat(tiny_dir, db, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Where was Marie Curie born?\nAnd Alan Turing?\n\n"))
    assert example("chat").main(["--model", str(tiny_dir), "--db", str(db), "--max-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("you> ") == 3 and "prompt tokens from the cache" in out


def test_ingest_and_ask(tiny_dir, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "curie.md").write_text("# Marie Curie\n\nMarie Curie was born in Warsaw in 1867.\n", encoding="utf-8")
    args = [str(docs), "Where was Marie Curie born?", "--model", str(tiny_dir), "--db", str(tmp_path / "kb.db"),
            "--max-tokens", "8"]
    assert example("ingest_and_ask").main(args) == 0
    out = capsys.readouterr().out
    assert "1 documents added" in out and "Q: Where was Marie Curie born?" in out


def test_embed_in_app_cancels(tiny_dir, capsys):
    assert example("embed_in_app").main(["--model", str(tiny_dir), "--stop-after", "3"]) == 0
    assert "[cancelled:" in capsys.readouterr().out


def test_openai_client(tiny_dir, db, capsys):
    lacy = lacy_mlx.load(str(tiny_dir), db=str(db))
    with running(lacy) as server:
        assert example("openai_client").main(["--base-url", server.url]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "embedding: 64 dims" in out


def test_convert_pytorch(tmp_path, capsys):
    pytest.importorskip("torch")
    from convert_models import checkpoint

    src, _, _ = checkpoint("llama")
    assert example("convert_pytorch").main([str(src), str(tmp_path / "out"), "--verify", "--add-call-token"]) == 0
    out = capsys.readouterr().out
    assert "verify:" in out and "<CALL> id" in out


@pytest.mark.slow
def test_train_tiny(tmp_path, capsys):
    assert example("train_tiny").main(["--out", str(tmp_path / "run"), "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "trained" in out and "with calls:" in out
