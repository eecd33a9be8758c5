"""The knowledge store: one SQLite file with sqlite-vec (documents, chunks, vectors, metadata)."""
from lacy_mlx.store.records import AddResult, Document, DocumentInput, SearchHit, StoredChunk
from lacy_mlx.store.store import SEARCH_MODES, Store

__all__ = ["AddResult", "Document", "DocumentInput", "SEARCH_MODES", "SearchHit", "Store", "StoredChunk"]
