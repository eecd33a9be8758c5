"""Real processes: SIGKILL in the middle of an ingest, and a reader while another process writes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lacy_mlx.chunker import ChunkerConfig, chunk_text
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.store import Store
from store_checks import assert_indexes_agree

WRITER = textwrap.dedent("""
    import sys
    from lacy_mlx.chunker import ChunkerConfig
    from lacy_mlx.embed import HashedEmbedder
    from lacy_mlx.store import Store

    def text(i):
        return " ".join(f"Sentence {j} of document {i} mentions topic {(i * j) % 17}." for j in range(3 + i % 9))

    store = Store.open(sys.argv[1], embedder=HashedEmbedder(dim=32))
    print("ready", flush=True)
    for start in range(0, 100000, 8):
        store.add_documents(({"id": f"d{i}", "text": text(i)} for i in range(start, start + 8)),
                            batch_size=4, chunker=ChunkerConfig(max_tokens=12, overlap=3))
        print("batch", start, flush=True)
""")


def _doc_text(i: int) -> str:
    return " ".join(f"Sentence {j} of document {i} mentions topic {(i * j) % 17}." for j in range(3 + i % 9))


def _start_writer(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1])
def test_sigkill_mid_ingest_leaves_whole_documents(tmp_path, delay):
    path = tmp_path / "kill.db"
    proc = _start_writer(path)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with Store.open(path) as store:
        counts = store.count()
        assert counts["documents"] > 0, "the writer was killed before writing anything; raise the delay"
        assert counts["chunks"] == counts["vectors"]
        cfg = ChunkerConfig(max_tokens=12, overlap=3)
        for doc_id, ext, _ in store.documents():
            doc = store.get(doc_id)
            want = chunk_text(_doc_text(int(ext[1:])), cfg)
            assert [c.text for c in doc.chunks] == [c.text for c in want], f"{ext} is partial"
        vec_ids = {r[0] for r in store.conn.execute("SELECT chunk_id FROM vectors")}
        chunk_ids = {r[0] for r in store.conn.execute("SELECT id FROM chunks")}
        assert vec_ids == chunk_ids
        assert_indexes_agree(store)  # the keyword index too
        # Store still writable and searchable after the crash.
        store.add_documents([{"id": "after", "text": "written after the crash"}])
        assert store.search("written after the crash", k=1)[0].external_id == "after"


def test_reader_keeps_working_while_another_process_writes(tmp_path):
    path = tmp_path / "rw.db"
    with Store.open(path, embedder=HashedEmbedder(dim=32)) as s:
        s.add_documents([{"id": "seed", "text": "seed document about rivers"}])
    proc = _start_writer(path)
    try:
        seen, errors = [], 0
        with Store.open(path, read_only=True) as reader:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                hits = reader.search("topic 3 document", k=3, fast=len(seen) % 2 == 0)
                assert hits and all(h.text for h in hits)
                seen.append(reader.count()["documents"])
        assert errors == 0 and len(seen) > 5
        assert seen[-1] > seen[0], "the reader never saw the writer's commits"
    finally:
        proc.kill()
        proc.wait(timeout=30)
