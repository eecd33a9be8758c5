"""The knowledge store: one SQLite file with sqlite-vec (documents, chunks, vectors, metadata)."""
from lacy_mlx.store.records import AddResult, Document, DocumentInput, SearchHit, StoredChunk
from lacy_mlx.store.store import DEFAULT_TEXT_MODE, RETRIEVAL_MODES, SEARCH_MODES, Store

__all__ = ["AddResult", "Document", "DocumentInput", "DEFAULT_TEXT_MODE", "RETRIEVAL_MODES", "SEARCH_MODES", "SearchHit", "Store", "StoredChunk"]
