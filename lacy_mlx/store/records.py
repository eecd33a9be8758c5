"""Plain records the store takes and returns."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lacy_mlx.errors import InputError


@dataclass(frozen=True)
class SearchHit:
    """One search result: a chunk, its score and where it comes from.

    ``score`` ranks the hits of one search: cosine similarity (vector mode), BM25 relevance
    (keyword mode: higher is better) or the reciprocal-rank-fusion score (hybrid). ``cosine``
    and ``bm25`` are those components where the search computed them (``bm25`` is None for a
    chunk that matched no query word).
    """

    text: str
    score: float
    document_id: int
    external_id: str | None
    title: str | None
    chunk_id: int
    ordinal: int  # chunk position within its document, from 0
    start: int  # character span of the chunk in the document's text
    end: int
    metadata: dict[str, Any]
    cosine: float | None = None
    bm25: float | None = None


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as stored: ``text`` is ``document_text[start:end]``."""

    id: int
    ordinal: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """A stored document with its chunks in order."""

    id: int
    external_id: str | None
    title: str | None
    metadata: dict[str, Any]
    content_hash: str
    created: str
    chunks: list[StoredChunk]


@dataclass
class AddResult:
    """What one ``add_documents`` call did; ``skipped`` holds ``(reference, reason)`` pairs."""

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DocumentInput:
    """A document to add: either ``text`` (chunked and embedded by the store) or ready ``chunks``.

    ``chunks`` is a list of chunk texts (their spans are laid end to end, joined by a blank line),
    optionally with ``vectors`` of shape ``(len(chunks), dim)`` so nothing is embedded.
    """

    text: str | None = None
    external_id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    chunks: list[str] | None = None
    vectors: np.ndarray | None = None

    @classmethod
    def coerce(cls, item: "DocumentInput | dict[str, Any] | str") -> "DocumentInput":
        """Accept a DocumentInput, a plain string, or a dict with the same keys (``id`` means external_id)."""
        if isinstance(item, cls):
            return item
        if isinstance(item, str):
            return cls(text=item)
        if not isinstance(item, dict):
            raise InputError(f"a document must be a str, dict or DocumentInput, got {type(item).__name__}")
        known = {"text", "external_id", "id", "title", "metadata", "chunks", "vectors"}
        extra = {k: v for k, v in item.items() if k not in known}
        given = item.get("metadata")
        # Anything but a mapping is kept as is, for validate() to reject with a clear message.
        metadata = {**(given or {}), **extra} if given is None or isinstance(given, dict) else given
        ext = item.get("external_id", item.get("id"))
        return cls(
            text=item.get("text"),
            external_id=None if ext is None else str(ext),
            title=item.get("title"),
            metadata=metadata,
            chunks=item.get("chunks"),
            vectors=item.get("vectors"),
        )

    def reference(self, index: int) -> str:
        """How errors name this document."""
        return repr(self.external_id) if self.external_id is not None else f"#{index}"

    def full_text(self) -> str:
        """The document text the content hash and character spans refer to."""
        if self.chunks is not None:
            return "\n\n".join(self.chunks)
        return self.text or ""

    def validate(self, index: int) -> None:
        """Raise InputError for empty text, empty chunks, text that is not valid Unicode, a title or
        external id that is not a string, or metadata that is not a JSON object (NaN and inf included)."""
        ref = self.reference(index)
        if self.chunks is None and self.text is None:
            raise InputError(f"document {ref} has no text: give 'text' or 'chunks'")
        if self.chunks is not None:
            if isinstance(self.chunks, str) or not isinstance(self.chunks, (list, tuple)):
                raise InputError(f"document {ref}: chunks must be a list of strings")
            if not self.chunks or any(not isinstance(c, str) or not c.strip() for c in self.chunks):
                raise InputError(f"document {ref} has an empty or whitespace-only chunk: remove it")
        elif not isinstance(self.text, str):
            raise InputError(f"document {ref}: text must be a string, got {type(self.text).__name__}")
        elif not self.text.strip():
            raise InputError(f"document {ref} is empty or whitespace-only: there is nothing to store")
        for what, value in (("external id", self.external_id), ("title", self.title)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"document {ref}: the {what} must be a string, got {type(value).__name__}")
        for what, value in (("text", self.full_text()), ("external id", self.external_id), ("title", self.title)):
            check_unicode(value, f"the {what} of document {ref}")
        if not isinstance(self.metadata, dict):
            raise InputError(f"document {ref}: metadata must be a JSON object (a dict), got {type(self.metadata).__name__}")
        try:
            check_unicode(json.dumps(self.metadata, allow_nan=False, ensure_ascii=False, sort_keys=True), f"the metadata of document {ref}")
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"document {ref}: metadata is not valid JSON ({exc}); NaN and inf have no JSON form") from exc

    def content_hash(self) -> str:
        """sha256 of the document text: equal texts are the same content."""
        return hashlib.sha256(self.full_text().encode("utf-8")).hexdigest()


def check_unicode(text: str | None, what: str) -> None:
    """Raise InputError when ``text`` cannot be stored as UTF-8 (a lone surrogate, e.g. from bad decoding)."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} is not valid Unicode (a lone surrogate at character {exc.start}, e.g. from "
                         f"bytes that are not UTF-8): give it as UTF-8 text") from exc
