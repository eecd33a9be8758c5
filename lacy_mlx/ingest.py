"""Turn files and folders (.txt, .md, .jsonl) into documents for the store.

A file that is not UTF-8, or a JSONL line that is not a JSON object with text (or whose document
the store would refuse, e.g. metadata holding NaN), is skipped with a warning naming the file and
line; the rest is ingested. A UTF-8 byte order mark is dropped. Each file's external id is its resolved path (``file://`` URI), so
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
    return _readable(path.stem)


def _readable(name: str | Path) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as lone surrogates) become U+FFFD."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_documents(path: Path, *, skipped_files: list[str] | None = None) -> Iterator[DocumentInput]:
    """Documents from one file; warns and yields nothing for an unreadable file (its path is then
    appended to ``skipped_files`` when given)."""

    def skip_file(reason: str) -> None:
        warnings.warn(f"skipped {path}: {reason}", stacklevel=3)
        if skipped_files is not None:
            skipped_files.append(str(path))

    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading BOM is not part of the text
    except UnicodeDecodeError as exc:
        skip_file(f"not UTF-8 text (byte {exc.start}); convert it to UTF-8")
        return
    except OSError as exc:
        skip_file(f"cannot be read ({exc.strerror or exc})")
        return
    uri = path.resolve().as_uri()
    if path.suffix.lower() != ".jsonl":
        if not text.strip():
            skip_file("the file is empty")
            return
        yield DocumentInput(text=text, external_id=uri, title=_title(path, text), metadata={"source": _readable(path)})
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
        try:
            doc = DocumentInput.coerce(obj)
            if doc.external_id is None:
                doc.external_id = f"{uri}#L{lineno}"
            if isinstance(doc.metadata, dict):
                doc.metadata.setdefault("source", _readable(path))
            doc.validate(lineno)  # the store would refuse it: skip this line, not the batch
        except InputError as exc:
            warnings.warn(f"skipped {path}:{lineno}: {exc}", stacklevel=2)
            continue
        yield doc


def iter_documents(paths: Iterable[str | Path], *, skipped_files: list[str] | None = None) -> Iterator[DocumentInput]:
    """Every document in ``paths`` (files and folders), file by file in sorted order."""
    for path in find_files(paths):
        yield from read_documents(path, skipped_files=skipped_files)
