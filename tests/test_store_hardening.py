"""The store failures found by trying it as a new user and as an attacker (issue 19), one test each."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import apsw
import numpy as np
import pytest

from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import InputError, StoreError
from lacy_mlx.ingest import iter_documents
from lacy_mlx.store import Store
from lacy_mlx.store import schema
from lacy_mlx.store.connection import connect, load_vec

from store_checks import DIM, cli

EMB = "hashed-ngram-v1:16"


# ---- data loss and wrong results ------------------------------------------------------------


def test_cli_delete_takes_external_ids_even_when_numeric(tmp_path, capsys):
    db = str(tmp_path / "kb.db")
    docs = tmp_path / "docs.jsonl"
    # Row ids 1, 2, 3 hold the external ids "3", "1", "2": a number must not mean both.
    docs.write_text("".join(json.dumps({"id": i, "text": f"Document number {i} about topic {i}."}) + "\n"
                            for i in (3, 1, 2)), encoding="utf-8")
    assert cli(capsys, "ingest", str(docs), "--db", db, "--embedder", EMB, "--quiet")[0] == 0
    code, out, _ = cli(capsys, "store", "delete", "1", "--db", db)
    assert code == 0 and "deleted 1" in out
    with Store.open(db, read_only=True) as s:
        assert s.get("1") is None and s.get("3") is not None and s.get("2") is not None
        row_of_3 = s.get("3").id
    assert cli(capsys, "store", "delete", str(row_of_3), "--row-id", "--db", db)[0] == 0
    with Store.open(db, read_only=True) as s:
        assert [ext for _, ext, _ in s.documents()] == ["2"]
    code, _, err = cli(capsys, "store", "delete", "abc", "--row-id", "--db", db)
    assert code == 1 and "integer row ids" in err


def test_python_delete_and_get_refuse_ambiguous_references(store_path):
    with Store.open(store_path) as s:
        for verb in (s.get, s.delete):  # argv holds undecodable bytes as lone surrogates
            with pytest.raises(InputError, match="not valid Unicode"):
                verb("\udcff\udcfe")
        for bad in (True, 1.0, None, ["keep"]):
            with pytest.raises(InputError, match="external id \\(str\\) or a row id \\(int\\)"):
                s.delete(bad)
        assert s.count()["documents"] == 1


def test_a_writer_waits_for_another_writer_instead_of_failing(store_path):
    """A deferred transaction that read before another writer committed could not wait (BusyError)."""
    other = apsw.Connection(str(store_path))
    load_vec(other)
    other.set_busy_timeout(10_000)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE lacy_meta SET value = value WHERE key = 'format'")
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            with Store.open(store_path) as s:
                s.add_documents([{"id": f"w{i}", "text": f"writer text {i}"} for i in range(3)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=ingest)
    t.start()
    time.sleep(0.5)  # the writer is now inside its transaction, waiting for the lock
    other.execute("COMMIT")
    t.join(30)
    other.close()
    assert not errors, errors
    with Store.open(store_path, read_only=True) as s:
        assert s.count()["documents"] == 4


CONCURRENT = textwrap.dedent("""
    import sys
    from lacy_mlx.embed import HashedEmbedder
    from lacy_mlx.store import Store
    tag = sys.argv[2]
    with Store.open(sys.argv[1], embedder=HashedEmbedder(dim=16)) as s:
        for b in range(6):
            s.add_documents([{"id": f"{tag}-{b}-{i}", "text": f"text {tag} {b} {i} " * 20} for i in range(20)],
                            batch_size=5)
    print("ok")
""")


@pytest.mark.slow
def test_concurrent_ingest_processes_all_succeed(store_path):
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(store_path), tag], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tag in "abc"]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    with Store.open(store_path, read_only=True) as s:
        assert s.count()["documents"] == 1 + 3 * 6 * 20


def test_nan_metadata_line_is_skipped_by_line_number_rest_lands(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "first good line"}\n'
                    '{"id": "b", "text": "bad metadata", "score": NaN}\n'
                    '{"id": "c", "text": "third good line", "metadata": [1, 2]}\n'
                    '{"id": "d", "text": "fourth good line", "w": Infinity}\n'
                    '{"id": "e", "text": "last good line"}\n', encoding="utf-8")
    db = str(tmp_path / "kb.db")
    code, out, err = cli(capsys, "ingest", str(docs), "--db", db, "--embedder", EMB, "--quiet")
    assert code == 0, err
    assert "docs.jsonl:2:" in err and "NaN" in err and "docs.jsonl:3:" in err and "docs.jsonl:4:" in err
    assert "2 added" in out
    with Store.open(db, read_only=True) as s:
        assert sorted(ext for _, ext, _ in s.documents()) == ["a", "e"]
    with Store.open(db) as s:  # the Python API: one clear error, nothing written
        with pytest.raises(InputError, match="NaN"):
            s.add_documents([{"id": "x", "text": "t", "score": float("nan")}])
        assert s.count()["documents"] == 2


def test_interrupted_creation_leaves_no_half_store(tmp_path):
    """Creation is one transaction: a failure after the schema and before the metadata leaves nothing."""

    class Dies(HashedEmbedder):
        @property
        def name(self) -> str:  # read when the metadata is written, after the schema
            raise RuntimeError("killed here")

        @name.setter
        def name(self, value: str) -> None:
            pass

    path = tmp_path / "kb.db"
    with pytest.raises(RuntimeError, match="killed here"):
        Store.open(path, embedder=Dies(dim=DIM))
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents(["It works after the failed creation."])
        assert s.count()["documents"] == 1


def test_half_created_store_from_an_older_version_is_finished(tmp_path):
    """A file with the schema but no metadata (killed mid-creation by an older lacy-mlx) is rebuilt."""
    path = tmp_path / "kb.db"
    conn = connect(path, create=True)
    conn.execute("PRAGMA journal_mode = WAL")
    schema.migrate(conn, 384)
    conn.close()
    with pytest.raises(StoreError, match="never fully created.*open it once for writing"):
        Store.open(path, read_only=True)
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        assert s.dim == DIM and s.add_documents(["Finished."]).added == 1


def test_a_foreign_sqlite_file_is_still_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE lacy_meta(key TEXT, value TEXT); CREATE TABLE documents(x); INSERT INTO documents VALUES (1)")
    conn.close()
    with pytest.raises(StoreError, match="not a lacy store"):
        Store.open(path)
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT count(*) FROM documents").fetchall() == [(1,)]  # nothing dropped


# ---- clear errors ---------------------------------------------------------------------------


def test_relative_db_paths(store_path, monkeypatch, capsys):
    monkeypatch.chdir(store_path.parent)
    with Store.open("kb.db", read_only=True) as s:
        assert s.search("document survive", k=1)[0].external_id == "keep"
    for argv in (["search", "survive", "--db", "kb.db"], ["store", "stats", "--db", "kb.db"],
                 ["store", "list", "--db", "kb.db"], ["store", "show", "keep", "--db", "kb.db"]):
        code, out, err = cli(capsys, *argv)
        assert code == 0 and "keep" in out or argv[1] == "stats", (argv, err)


RO_PROBE = textwrap.dedent("""
    import os, sys
    from lacy_mlx.cli import main
    import lacy_mlx.cli.store, lacy_mlx.cli.ingest, lacy_mlx.cli.search, lacy_mlx.store.writes
    import encodings.idna, encodings.utf_8_sig, json, sqlite_vec, tqdm
    from lacy_mlx.runtime.delegates.retrieval import open_store
    os.setgid(65534); os.setuid(65534)
    os.chdir(sys.argv[1])
    for argv in (["store", "delete", "keep", "--db", "kb.db"], ["store", "vacuum", "--db", "kb.db"],
                 ["store", "mode", "exact", "--db", "kb.db"], ["ingest", sys.argv[2], "--db", "kb.db", "--quiet"],
                 ["search", "survive", "--db", "kb.db"]):
        print("rc", argv[1] if argv[0] == "store" else argv[0], main(argv), flush=True)
    store = open_store("kb.db")  # what generate/chat --db open: read-only, so it works here
    print("generate-store", store.read_only, store.count()["documents"])
""")


def test_read_only_location_errors_are_one_line(store_path, tmp_path):
    base = Path(tempfile.mkdtemp(prefix="lacy-ro-"))
    doc = base / "new.txt"
    try:
        (base / "kb.db").write_bytes(store_path.read_bytes())
        doc.write_text("new text", encoding="utf-8")
        base.chmod(0o555)
        os.chmod(base / "kb.db", 0o444)
        out = subprocess.run([sys.executable, "-c", RO_PROBE, str(base), str(doc)], capture_output=True,
                             text=True, timeout=120)
        assert "Traceback" not in out.stderr, out.stderr
        for verb in ("delete", "vacuum", "mode", "ingest"):
            assert f"rc {verb} 1" in out.stdout, out.stdout + out.stderr
        assert out.stderr.count("lacy-mlx: error: cannot write the store at kb.db") == 4, out.stderr
        assert "rc search 0" in out.stdout and "generate-store True 1" in out.stdout, out.stdout + out.stderr
    finally:
        base.chmod(0o755)
        for p in base.iterdir():
            p.unlink()
        base.rmdir()


@pytest.mark.parametrize("bad, match", [
    ({"id": "s", "text": "lone \udc80 surrogate"}, "not valid Unicode"),
    ({"id": "s\ud800", "text": "fine"}, "not valid Unicode"),
    ({"id": "m", "text": "fine", "metadata": ["a", "list"]}, "metadata must be a JSON object"),
    ({"id": "m", "text": "fine", "metadata": "a string"}, "metadata must be a JSON object"),
    ({"id": "t", "text": "fine", "title": 5}, "title must be a string"),
    ({"id": "c", "chunks": "not a list"}, "chunks must be a list"),
    ({"id": "n", "text": 12}, "text must be a string"),
    ({"id": "k", "text": "fine", "metadata": {1: "x", "a": "y"}}, "metadata is not valid JSON"),
])
def test_bad_documents_get_input_errors(store_path, bad, match):
    with Store.open(store_path) as s:
        with pytest.raises(InputError, match=match):
            s.add_documents([bad])
        assert s.count()["documents"] == 1


@pytest.mark.parametrize("query, filters, match", [
    ("lone \udc80", None, "not valid Unicode"),
    ("x", {"a\x00b": 1}, "NUL"),
    ("x", "lang=en", "filters must be a dict"),
    ("x", ["lang"], "filters must be a dict"),
    ("x", {"lang": float("nan")}, "NaN"),
    (np.array(["a"] * DIM, dtype=object), None, "not an array of numbers"),
    (np.array([object()] * DIM, dtype=object), None, "not an array of numbers"),
    (np.ones((2, DIM)), None, "search takes one vector"),
    (None, None, "not a vector"),
    (3.0, None, "not a vector"),
])
def test_bad_search_arguments_get_input_errors(store_path, query, filters, match):
    with Store.open(store_path, read_only=True) as s:
        for fast in (True, False):
            with pytest.raises(InputError, match=match):
                s.search(query, k=1, filters=filters, fast=fast)


def test_object_dtype_vectors_on_add(store_path):
    from lacy_mlx.store import DocumentInput

    with Store.open(store_path) as s:
        with pytest.raises(InputError, match="not an array of numbers"):
            s.add_documents([DocumentInput(chunks=["a"], vectors=np.array([["x"] * DIM], dtype=object))])
        assert s.count()["documents"] == 1


def test_bom_is_stripped_and_skipped_files_are_counted(tmp_path, capsys):
    (tmp_path / "bom.txt").write_bytes("\ufeffHello with a byte order mark.".encode("utf-8"))
    (tmp_path / "empty.md").write_text("  \n", encoding="utf-8")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    db = str(tmp_path / "kb.db")
    code, out, err = cli(capsys, "ingest", str(tmp_path), "--db", db, "--embedder", EMB, "--quiet")
    assert code == 0 and "1 added" in out and "2 file(s) skipped" in out, out + err
    with Store.open(db, read_only=True) as s:
        doc = s.get((tmp_path / "bom.txt").resolve().as_uri())
        assert doc.chunks[0].text.startswith("Hello")


def test_batch_size_spans_files(tmp_path, capsys, monkeypatch):
    """--batch-size documents per transaction across files, not one transaction per file."""
    for i in range(7):
        (tmp_path / f"d{i}.txt").write_text(f"Small file number {i}.", encoding="utf-8")
    batches: list[int] = []
    from lacy_mlx.store import writes

    real = writes.WriteMixin._add_batch
    monkeypatch.setattr(writes.WriteMixin, "_add_batch",
                        lambda self, batch, *a: (batches.append(len(batch)), real(self, batch, *a))[1])
    code, out, _ = cli(capsys, "ingest", str(tmp_path), "--db", str(tmp_path / "kb.db"), "--embedder", EMB,
                       "--quiet", "--batch-size", "3")
    assert code == 0 and "7 added" in out
    assert batches == [3, 3, 1]


def test_iter_documents_skips_invalid_jsonl_lines_with_numbers(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "ok"}\n{"text": "bad", "title": ["t"]}\n', encoding="utf-8")
    with pytest.warns(UserWarning, match=r"x.jsonl:2: .*title must be a string"):
        docs = list(iter_documents([f]))
    assert [d.full_text() for d in docs] == ["ok"]


def test_piping_into_head_prints_no_traceback(tmp_path):
    db = tmp_path / "kb.db"
    with Store.open(db, embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents([{"id": f"doc-{i:05d}", "title": f"Title {i}", "text": f"Document {i}."} for i in range(3000)])
    for cmd in ("store list --limit 100000 --json", "search document --full -k 2000"):
        out = subprocess.run(f"{sys.executable} -m lacy_mlx {cmd} --db {db} | head -n 1", shell=True,
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.count("\n") == 1 and out.stderr == "", (cmd, out.stderr[-2000:])


def test_huge_finite_vectors_keep_their_direction(store_path):
    with Store.open(store_path) as s:
        hits = s.search(np.full(DIM, 1e308), k=1, fast=True)
        assert hits and np.isfinite(hits[0].score) and hits[0].score != 0.0


def test_a_file_name_that_is_not_utf8_is_still_ingested(tmp_path, capsys):
    folder = os.fsencode(tmp_path)
    with open(os.path.join(folder, b"caf\xe9.txt"), "wb") as fh:
        fh.write(b"A file whose name is Latin-1.")
    db = str(tmp_path / "kb.db")
    code, out, err = cli(capsys, "ingest", str(tmp_path), "--db", db, "--embedder", EMB, "--quiet")
    assert code == 0 and "1 added" in out, out + err
    with Store.open(db, read_only=True) as s:
        (doc_id, ext, title), = s.documents()
        assert title == "caf\ufffd" and ext.endswith("caf%E9.txt")


KILLED_CREATION = textwrap.dedent("""
    import os, signal, sys
    from lacy_mlx.embed import HashedEmbedder
    from lacy_mlx.store import Store

    class DiesMidCreation(HashedEmbedder):
        @property
        def name(self):  # read once the schema is written, before the metadata
            os.kill(os.getpid(), signal.SIGKILL)

        @name.setter
        def name(self, value):
            pass

    Store.open(sys.argv[1], embedder=DiesMidCreation(dim=16))
""")


def test_sigkill_during_creation_leaves_a_file_the_next_open_creates(tmp_path):
    path = tmp_path / "kb.db"
    out = subprocess.run([sys.executable, "-c", KILLED_CREATION, str(path)], capture_output=True, timeout=60)
    assert out.returncode == -9 and path.exists()
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        assert s.add_documents(["Created after the kill."]).added == 1
