"""The store's write verbs: add (upsert), delete, vacuum. Each batch is one transaction."""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import apsw
import numpy as np

from lacy_mlx.chunker import Chunk, ChunkerConfig, chunk_text
from lacy_mlx.embed.base import check_embeddings
from lacy_mlx.errors import InputError, StoreError
from lacy_mlx.store import schema
from lacy_mlx.store.connection import write_transaction
from lacy_mlx.store.records import AddResult, DocumentInput

if TYPE_CHECKING:
    from lacy_mlx.store.mirror import VectorMirror


class _Prepared:
    """A validated document with its chunks and vectors, ready for one transaction."""

    def __init__(self, doc: DocumentInput, chunks: list[Chunk], content_hash: str) -> None:
        self.doc = doc
        self.chunks = chunks
        self.content_hash = content_hash
        self.vectors: np.ndarray | None = doc.vectors


class WriteMixin:
    """Write verbs of :class:`~lacy_mlx.store.Store` (kept apart so each file reads in one sitting)."""

    conn: apsw.Connection
    dim: int
    read_only: bool
    search_mode: str
    _mirror: "VectorMirror | None"

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"the store {self.path} was opened read-only: open it for writing to change it")  # type: ignore[attr-defined]

    def add_documents(self, docs: Iterable[DocumentInput | dict[str, Any] | str], *, batch_size: int = 32,
                      chunker: ChunkerConfig | None = None, on_error: str = "raise",
                      progress: Callable[[int], None] | None = None) -> AddResult:
        """Chunk, embed and store documents, upserting by external id or content hash.

        A document whose external id exists is replaced when its text changed and left alone when
        not; one without an external id is skipped when a document with the same text exists.
        Each batch of ``batch_size`` documents is one transaction. Bad documents raise InputError
        before their batch is written (``on_error="raise"``; earlier batches stay) or are skipped
        with a warning (``on_error="skip"``). ``progress(n)`` is called with each batch's size.
        """
        self._check_writable()
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        result = AddResult()
        batch: list[DocumentInput] = []
        index = 0
        for item in docs:
            batch.append(DocumentInput.coerce(item))
            if len(batch) == batch_size:
                self._add_batch(batch, index, chunker or ChunkerConfig(), on_error, result)
                index += len(batch)
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            self._add_batch(batch, index, chunker or ChunkerConfig(), on_error, result)
            if progress:
                progress(len(batch))
        return result

    def _prepare_doc(self, doc: DocumentInput, index: int, cfg: ChunkerConfig) -> _Prepared:
        doc.validate(index)
        if doc.chunks is not None:
            chunks, pos = [], 0
            for i, text in enumerate(doc.chunks):
                chunks.append(Chunk(i, text, pos, pos + len(text)))
                pos += len(text) + 2  # the blank line full_text() joins with
        else:
            chunks = chunk_text(doc.text or "", cfg)
        if doc.vectors is not None:
            if len(doc.vectors) != len(chunks):
                raise InputError(f"document {doc.reference(index)} has {len(chunks)} chunks but "
                                 f"{len(doc.vectors)} vectors: give one vector per chunk")
            doc.vectors = check_embeddings(doc.vectors, self.dim, what=f"vectors of document {doc.reference(index)}")
        return _Prepared(doc, chunks, doc.content_hash())

    def _is_unchanged(self, p: _Prepared) -> bool:
        if p.doc.external_id is not None:
            sql, arg = "SELECT content_hash = ? FROM documents WHERE external_id = ?", (p.content_hash, p.doc.external_id)
        else:
            sql, arg = "SELECT 1 FROM documents WHERE content_hash = ? LIMIT 1", (p.content_hash,)
        rows = self.conn.execute(sql, arg).fetchall()
        return bool(rows and rows[0][0])

    def _add_batch(self, batch: list[DocumentInput], start: int, cfg: ChunkerConfig, on_error: str,
                   result: AddResult) -> None:
        prepared: list[_Prepared] = []
        for offset, doc in enumerate(batch):
            try:
                prepared.append(self._prepare_doc(doc, start + offset, cfg))
            except InputError as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipped: {exc}", stacklevel=4)
                result.skipped.append((doc.reference(start + offset), str(exc)))
        # Embed outside the write transaction (slow), and only what changed.
        todo = [p for p in prepared if not self._is_unchanged(p)]
        result.unchanged += len(prepared) - len(todo)
        self._embed(todo)
        added_ids: list[int] = []
        removed_ids: list[int] = []
        with write_transaction(self.conn):  # the whole batch lands or nothing does
            for p in todo:
                outcome = self._upsert(p, added_ids, removed_ids)
                if outcome == "added":
                    result.added += 1
                elif outcome == "replaced":
                    result.replaced += 1
                else:
                    result.unchanged += 1
                    continue
                result.chunks += len(p.chunks)
            old = self._bump_version() if (added_ids or removed_ids) else None
        if old is not None:
            new_vecs = np.concatenate([p.vectors for p in todo if p.vectors is not None]) if added_ids else None
            self._mirror_delta(old, added_ids, new_vecs, removed_ids)

    def _embed(self, todo: list[_Prepared]) -> None:
        texts = [c.text for p in todo if p.vectors is None for c in p.chunks]
        if not texts:
            return
        vecs = check_embeddings(self.embedder.embed_batch(texts), self.dim, what="embedder output")  # type: ignore[attr-defined]
        pos = 0
        for p in todo:
            if p.vectors is None:
                p.vectors = vecs[pos : pos + len(p.chunks)]
                pos += len(p.chunks)

    def _upsert(self, p: _Prepared, added_ids: list[int], removed_ids: list[int]) -> str:
        """Write one prepared document inside the open transaction; return added/replaced/unchanged."""
        doc, meta = p.doc, json.dumps(p.doc.metadata, sort_keys=True, allow_nan=False)
        if doc.external_id is not None:
            rows = self.conn.execute("SELECT id, content_hash FROM documents WHERE external_id = ?",
                                     (doc.external_id,)).fetchall()
        else:
            rows = self.conn.execute("SELECT id, content_hash FROM documents WHERE content_hash = ? LIMIT 1",
                                     (p.content_hash,)).fetchall()
        if rows and rows[0][1] == p.content_hash:
            p.vectors = None  # another writer stored it meanwhile: nothing of ours lands
            return "unchanged"
        if rows:
            doc_id = rows[0][0]
            removed_ids += self._delete_chunks(doc_id)
            self.conn.execute("UPDATE documents SET title = ?, metadata = ?, content_hash = ? WHERE id = ?",
                              (doc.title, meta, p.content_hash, doc_id))
            outcome = "replaced"
        else:
            self.conn.execute("INSERT INTO documents(external_id, title, metadata, content_hash) VALUES (?, ?, ?, ?)",
                              (doc.external_id, doc.title, meta, p.content_hash))
            doc_id = self.conn.last_insert_rowid()
            outcome = "added"
        assert p.vectors is not None
        for chunk, vec in zip(p.chunks, p.vectors):
            self.conn.execute("INSERT INTO chunks(document_id, ordinal, text, char_start, char_end) VALUES (?, ?, ?, ?, ?)",
                              (doc_id, chunk.ordinal, chunk.text, chunk.start, chunk.end))
            cid = self.conn.last_insert_rowid()
            self.conn.execute("INSERT INTO vectors(chunk_id, embedding) VALUES (?, ?)", (cid, vec.tobytes()))
            added_ids.append(cid)
        return outcome

    def _delete_chunks(self, doc_id: int) -> list[int]:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE document_id = ?", (doc_id,))]
        self.conn.executemany("DELETE FROM vectors WHERE chunk_id = ?", [(i,) for i in ids])
        self.conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
        return ids

    def _bump_version(self) -> int:
        """Advance ``vectors_version`` inside the open transaction; return the old value."""
        old = self._vectors_version()  # type: ignore[attr-defined]
        self.conn.execute("UPDATE lacy_meta SET value = ? WHERE key = 'vectors_version'", (str(old + 1),))
        return old

    def _mirror_delta(self, old: int, added: list[int], vecs: np.ndarray | None, removed: list[int]) -> None:
        """Apply our own committed write to the mirror; drop it if someone else wrote in between."""
        if self._mirror is None:
            return
        if self._mirror.version != old:
            self._mirror = None
            return
        if removed:
            self._mirror.remove(np.asarray(removed, dtype=np.int64))
        if added and vecs is not None:
            self._mirror.add(np.asarray(added, dtype=np.int64), vecs)
        self._mirror.version = old + 1

    def delete(self, ref: int | str) -> bool:
        """Delete a document with its chunks and vectors; False if absent.

        A ``str`` is an external id (``"5"`` is the document whose id is "5"); an ``int`` is the
        store's internal row id (:attr:`Document.id`).
        """
        self._check_writable()
        with write_transaction(self.conn):
            row = self._doc_row(ref)  # type: ignore[attr-defined]
            if row is None:
                return False
            removed = self._delete_chunks(row[0])
            self.conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
            old = self._bump_version()
        self._mirror_delta(old, [], None, removed)
        return True

    def set_search_mode(self, mode: str) -> None:
        """Make ``mode`` ("fast" or "exact") this store's default search path."""
        self._check_writable()
        if mode not in ("fast", "exact"):
            raise InputError(f"search mode must be 'fast' or 'exact', got {mode!r}")
        with write_transaction(self.conn):
            self.conn.execute("UPDATE lacy_meta SET value = ? WHERE key = 'search_mode'", (mode,))
        self.search_mode = mode

    def vacuum(self) -> dict[str, int]:
        """Rebuild the vector table (sqlite-vec never reuses deleted rows' space), then VACUUM the file.

        Returns the file size before and after in bytes. The rebuild is one transaction.
        """
        self._check_writable()
        before = self.stats()["file_bytes"]  # type: ignore[attr-defined]
        with write_transaction(self.conn):  # vec0 tables cannot be renamed (their shadow tables keep the old name): copy out and back
            self.conn.execute("CREATE TEMP TABLE vectors_backup(chunk_id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
            self.conn.execute("INSERT INTO vectors_backup SELECT chunk_id, embedding FROM vectors")
            self.conn.execute("DROP TABLE vectors")
            schema.create_vector_table(self.conn, "vectors", self.dim)
            self.conn.execute("INSERT INTO vectors(chunk_id, embedding) SELECT chunk_id, embedding FROM vectors_backup")
            self.conn.execute("DROP TABLE vectors_backup")
            self.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize')")  # merge its b-trees
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"before_bytes": before, "after_bytes": self.stats()["file_bytes"]}  # type: ignore[attr-defined]
