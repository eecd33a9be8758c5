"""Turn files and folders (.txt, .md, .jsonl) into documents for the store.

A file that is not UTF-8, or a JSONL line that is not a JSON object with text, is skipped with a
warning; the rest is ingested. Each file's external id is its resolved path (``file://`` URI), so
ingesting the same file again adds nothing and an edited file replaces its old version.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from lacy_mlx.errors import InputError
from lacy_mlx.store.records import DocumentInput

SUFFIXES = (".txt", ".md", ".jsonl")


def find_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into the sorted list of ingestible files."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InputError(f"{path}: unsupported file type; lacy-mlx ingests {', '.join(SUFFIXES)}")
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


def _title(path: Path, text: str) -> str:
    if path.suffix.lower() == ".md":
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem


def read_documents(path: Path) -> Iterator[DocumentInput]:
    """Documents from one file; warns and yields nothing for an unreadable file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        warnings.warn(f"skipped {path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8", stacklevel=2)
        return
    uri = path.resolve().as_uri()
    if path.suffix.lower() != ".jsonl":
        if not text.strip():
            warnings.warn(f"skipped {path}: the file is empty", stacklevel=2)
            return
        yield DocumentInput(text=text, external_id=uri, title=_title(path, text), metadata={"source": str(path)})
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            warnings.warn(f"skipped {path}:{lineno}: not valid JSON ({exc.msg})", stacklevel=2)
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            warnings.warn(f"skipped {path}:{lineno}: expected an object with a 'text' string", stacklevel=2)
            continue
        doc = DocumentInput.coerce(obj)
        if doc.external_id is None:
            doc.external_id = f"{uri}#L{lineno}"
        doc.metadata.setdefault("source", str(path))
        yield doc


def iter_documents(paths: Iterable[str | Path]) -> Iterator[DocumentInput]:
    """Every document in ``paths`` (files and folders), file by file in sorted order."""
    for path in find_files(paths):
        yield from read_documents(path)
