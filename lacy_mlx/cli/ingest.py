"""``lacy-mlx ingest PATH... --db FILE``: chunk, embed and store files and folders."""
from __future__ import annotations

import argparse
import itertools
import sys
import warnings

from lacy_mlx.chunker import ChunkerConfig
from lacy_mlx.embed.registry import resolve_embedder
from lacy_mlx.cli.store import migration_progress
from lacy_mlx.errors import InputError
from lacy_mlx.ingest import iter_documents
from lacy_mlx.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="add .txt/.md/.jsonl files or folders to a store",
                       description="Chunk, embed and store documents. Re-ingesting an unchanged file adds nothing.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (.txt, .md, .jsonl)")
    p.add_argument("--db", required=True, help="store file (created if missing)")
    p.add_argument("--embedder", default=None,
                   help="embedder for a new store, e.g. hashed-ngram-v1:384 (default: the MLX encoder if installed)")
    p.add_argument("--max-tokens", type=int, default=128, help="chunk size in words and marks (default 128; fits a 256-wordpiece encoder)")
    p.add_argument("--overlap", type=int, default=16, help="words repeated between chunks (default 16)")
    p.add_argument("--batch-size", type=int, default=32, help="documents per transaction, across files (default 32); a document is never split")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    embedder = resolve_embedder(args.embedder) if args.embedder else None
    chunker = ChunkerConfig(args.max_tokens, args.overlap)
    skipped_files: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = iter_documents(args.paths, skipped_files=skipped_files)
        first = next(docs, None)  # a missing path fails here, before the store is created
        with Store.open(args.db, embedder=embedder, progress=migration_progress) as store, \
                tqdm(unit="doc", desc="ingest", disable=args.quiet or None, file=sys.stderr) as bar:
            # One document stream over all files: batches of --batch-size span files.
            stream = itertools.chain([first], docs) if first is not None else iter(())
            total = store.add_documents(stream, batch_size=args.batch_size, on_error="skip", chunker=chunker,
                                        progress=bar.update)
            counts = store.count()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{total.added} added, {total.replaced} replaced, {total.unchanged} unchanged, "
          f"{len(total.skipped)} skipped, {total.chunks} chunks written"
          + (f", {len(skipped_files)} file(s) skipped" if skipped_files else "")
          + f"; the store holds {counts['documents']} documents, {counts['chunks']} chunks")
    return 0
