"""Hostile inputs for the store and the CLI, generated with hypothesis.

The contract under test: whatever comes in, the store answers or raises its own InputError /
StoreError (the CLI: exit 0 or 1 with one ``lacy-mlx: error:`` line, or argparse's usage error),
and nothing already stored is lost.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lacy_mlx.cli import main
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import LacyError
from lacy_mlx.store import DocumentInput, Store

DIM = 16
pytestmark = pytest.mark.filterwarnings("ignore:skipped:UserWarning")
SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Text with everything a file or a user can put in it: controls, NUL, escapes, bidi marks, lone surrogates.
nasty_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | nasty_text
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(nasty_text, inner, max_size=3), max_leaves=8)
any_value = json_values | st.binary(max_size=8) | st.tuples(st.integers()) | st.just(object())


def _store(tmp: Path) -> Store:
    s = Store.open(tmp / "kb.db", embedder=HashedEmbedder(dim=DIM))
    s.add_documents([{"id": "keep", "text": "This document must survive every hostile call."}])
    return s


def _intact(s: Store) -> None:
    doc = s.get("keep")
    assert doc is not None and doc.chunks[0].text.startswith("This document must survive")
    assert s.search("survive hostile", k=1)[0].external_id == "keep"


document = st.fixed_dictionaries({}, optional={
    "id": st.none() | st.integers() | nasty_text | st.lists(st.integers(), max_size=2),
    "text": st.none() | nasty_text | st.integers(),
    "title": st.none() | nasty_text | st.integers(),
    "metadata": json_values,
    "chunks": st.none() | nasty_text | st.lists(nasty_text, max_size=3),
    "lang": json_values,
}) | nasty_text | st.integers() | st.none()


@SETTINGS
@given(docs=st.lists(document, min_size=1, max_size=4), on_error=st.sampled_from(["raise", "skip"]))
def test_add_documents_takes_anything_and_loses_nothing(docs, on_error):
    with tempfile.TemporaryDirectory() as tmp, _store(Path(tmp)) as s:
        before = s.count()["documents"]
        try:
            result = s.add_documents(docs, on_error=on_error)
        except LacyError:
            assert s.count()["documents"] == before  # the failed batch wrote nothing
        else:
            assert s.count()["documents"] == before + result.added
        _intact(s)
        counts = s.count()
        assert counts["chunks"] == counts["vectors"]


vectors = st.one_of(
    st.integers(0, 3).flatmap(lambda nd: st.lists(st.integers(0, DIM + 1), min_size=nd, max_size=nd)).map(
        lambda shape: np.full(shape, 0.5)),
    st.lists(st.floats(), min_size=DIM, max_size=DIM).map(np.array),
    st.lists(nasty_text, min_size=DIM, max_size=DIM).map(lambda xs: np.array(xs, dtype=object)),
)
filters = st.none() | st.dictionaries(nasty_text, json_values, max_size=3) | nasty_text | st.lists(nasty_text, max_size=2)


@SETTINGS
@given(query=nasty_text | vectors | any_value, k=st.integers(-3, 10_000) | st.booleans() | st.floats(),
       flt=filters, fast=st.none() | st.booleans())
def test_search_answers_or_refuses_clearly(query, k, flt, fast):
    with tempfile.TemporaryDirectory() as tmp, _store(Path(tmp)) as s:
        try:
            hits = s.search(query, k=k, filters=flt, fast=fast)
        except LacyError:
            pass
        else:
            assert all(math.isfinite(h.score) and -1.001 <= h.score <= 1.001 for h in hits) and len(hits) <= k
        _intact(s)


@SETTINGS
@given(refs=st.lists(st.integers(-5, 5) | nasty_text | st.none() | st.floats() | st.booleans(), max_size=4))
def test_get_and_delete_take_any_reference(refs):
    with tempfile.TemporaryDirectory() as tmp, _store(Path(tmp)) as s:
        for ref in refs:
            for verb in (s.get, s.delete):
                try:
                    verb(ref)
                except LacyError:
                    pass
        if s.get("keep") is not None:
            _intact(s)
        else:  # only an explicit reference to it may remove it
            assert "keep" in refs or 1 in refs


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("pristine") / "kb.db"
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents([{"id": f"d{i}", "text": f"Paragraph number {i}. " * 60} for i in range(30)])
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


@SETTINGS
@given(data=st.data())
def test_damaged_files_give_store_errors_only(pristine, data):
    raw = bytearray(pristine)
    how = data.draw(st.sampled_from(["flip", "truncate", "garbage"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif how == "garbage":
        raw = bytearray(b"SQLite format 3\x00" + data.draw(st.binary(min_size=0, max_size=5000)))
    else:
        for _ in range(data.draw(st.integers(1, 20))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kb.db"
        path.write_bytes(bytes(raw))
        read_only = data.draw(st.booleans())
        try:
            with Store.open(path, read_only=read_only, embedder=None if read_only else HashedEmbedder(dim=DIM)) as s:
                s.search("paragraph", k=5, fast=data.draw(st.booleans()))
                list(s.documents())
                s.stats()
                if not read_only:
                    s.add_documents(["new text"])
        except LacyError:
            pass


cli_arg = st.text(alphabet=st.characters(exclude_categories=(), exclude_characters="\x00"), max_size=20)  # argv may hold surrogate escapes of undecodable bytes


@settings(SETTINGS, max_examples=150)
@given(verb=st.sampled_from([["search", "QUERY"], ["store", "delete", "ID"], ["store", "show", "ID"],
                             ["store", "list"], ["store", "stats"]]),
       value=cli_arg, extra=st.lists(st.sampled_from(["--json", "--full", "--exact", "--row-id", "-k", "--filter",
                                                     "--limit"]) | cli_arg, max_size=3))
def test_cli_store_commands_never_trace_back(tmp_path_factory, capsys, verb, value, extra):
    tmp = tmp_path_factory.mktemp("cli")
    _store(tmp).close()
    argv = [value if a in ("QUERY", "ID") else a for a in verb] + extra + ["--db", str(tmp / "kb.db")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage error (exit 2): not ours to word
        assert exc.code == 2
        capsys.readouterr()
        return
    err = capsys.readouterr().err
    assert code in (0, 1), (argv, err)
    if code == 1:
        assert err.startswith("lacy-mlx: error:") and "Traceback" not in err, (argv, err)
    with Store.open(tmp / "kb.db", read_only=True) as s:
        assert s.get("keep") is not None or ("delete" in argv and (value == "keep" or value == "1"))


jsonl_line = st.one_of(
    st.dictionaries(st.sampled_from(["id", "text", "title", "metadata", "lang", "chunks"]), json_values, max_size=4)
    .map(lambda d: json.dumps(d, allow_nan=True)),
    nasty_text.map(lambda t: t.replace("\n", " ")),
    st.just('{"text": "NaN metadata", "x": NaN}'),
)


@SETTINGS
@given(lines=st.lists(jsonl_line, max_size=6))
def test_ingest_of_hostile_jsonl_keeps_the_good_lines(tmp_path_factory, capsys, lines):
    tmp = tmp_path_factory.mktemp("jsonl")
    good = '{"id": "good", "text": "A well formed line."}'
    raw = ("\n".join([good, *lines]) + "\n").encode("utf-8", errors="surrogatepass")
    (tmp / "docs.jsonl").write_bytes(raw)
    try:
        code = main(["ingest", str(tmp / "docs.jsonl"), "--db", str(tmp / "kb.db"), "--embedder",
                     f"hashed-ngram-v1:{DIM}", "--quiet"])
    finally:
        err = capsys.readouterr().err
    assert "Traceback" not in err and code == 0, err
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:  # a lone surrogate written through: the file is not UTF-8, skipped whole
        assert "not UTF-8" in err
        return
    with Store.open(tmp / "kb.db", read_only=True) as s:
        assert s.get("good") is not None
