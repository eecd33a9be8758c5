"""``lacy-mlx store stats|list|show|delete|vacuum|mode --db FILE``: look after a store.

Document ids on this command line are external ids (a file's ``file://`` URI, a JSONL line's
``id``); ``--row-id`` takes the store's internal row ids instead, as ``store list`` shows them.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from lacy_mlx.cli.terminal import inert
from lacy_mlx.errors import InputError, StoreError
from lacy_mlx.store import Store

_ROW_ID_HELP = "the IDs are internal row ids (the first column of `store list`), not external ids"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect and maintain a store", description="Store maintenance.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    stats = verbs.add_parser("stats", help="counts, embedder, sizes")
    stats.add_argument("--json", action="store_true", help="print JSON")
    lst = verbs.add_parser("list", help="list documents: row id, title, external id")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    show = verbs.add_parser("show", help="one document with its metadata and chunks")
    show.add_argument("id", metavar="ID", help="external id (e.g. a file URI or a JSONL id)")
    show.add_argument("--row-id", action="store_true", help=_ROW_ID_HELP)
    show.add_argument("--json", action="store_true", help="print JSON")
    delete = verbs.add_parser("delete", help="delete documents with their chunks and vectors")
    delete.add_argument("ids", nargs="+", metavar="ID", help="external ids (e.g. file URIs or JSONL ids)")
    delete.add_argument("--row-id", action="store_true", help=_ROW_ID_HELP)
    verbs.add_parser("vacuum", help="reclaim the space of deleted rows (rebuilds the vector table)")
    mode = verbs.add_parser("mode", help="set the default search path")
    mode.add_argument("mode", choices=["fast", "exact"])
    for v in (stats, lst, show, delete, verbs.choices["vacuum"], mode):
        v.add_argument("--db", required=True, help="store file")
    p.set_defaults(func=run)


def _ref(raw: str, row_id: bool) -> int | str:
    """An ID from the command line: the external id as given, or with --row-id an integer row id."""
    if not row_id:
        return raw
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"--row-id takes integer row ids, got {raw!r}; drop --row-id to use external ids") from None


def migration_progress(what: str, done: int, total: int) -> None:
    """Print a store upgrade's steps on stderr (``Store.open(progress=...)``)."""
    print(f"upgrading the store: {what} {done:,}/{total:,} chunks", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    read_only = args.verb in ("stats", "list", "show")
    with Store.open(args.db, create=False, read_only=read_only,
                    progress=None if read_only else migration_progress) as store:
        if args.verb == "stats":
            stats = store.stats()
            if args.json:
                print(json.dumps(stats, indent=2))
            else:
                for key, value in stats.items():
                    print(f"{key:>20}: {inert(value)}")
        elif args.verb == "list":
            _list(store, args)
        elif args.verb == "show":
            _show(store, _ref(args.id, args.row_id), args)
        elif args.verb == "delete":
            refs = [_ref(raw, args.row_id) for raw in args.ids]
            missing = [str(ref) for ref in refs if not store.delete(ref)]
            print(f"deleted {len(refs) - len(missing)} document(s)")
            if missing:
                kind = "row id" if args.row_id else "external id"
                raise StoreError(f"no document with {kind} {inert(', '.join(missing))}: "
                                 f"see `lacy-mlx store list --db {args.db}`")
        elif args.verb == "vacuum":
            sizes = store.vacuum()
            print(f"vacuumed: {sizes['before_bytes']:,} -> {sizes['after_bytes']:,} bytes")
        elif args.verb == "mode":
            store.set_search_mode(args.mode)
            print(f"default search mode: {args.mode}")
    return 0


def _list(store: Store, args: argparse.Namespace) -> None:
    for i, (doc_id, ext, title) in enumerate(store.documents()):
        if i >= args.limit:
            break
        if args.json:
            print(json.dumps({"id": doc_id, "external_id": ext, "title": title}, ensure_ascii=False))
        else:
            print(f"{doc_id:>6}  {inert(title or ''):<30}  {inert(ext or '')}")


def _show(store: Store, ref: int | str, args: argparse.Namespace) -> None:
    doc = store.get(ref)
    if doc is None:
        kind = "row id" if isinstance(ref, int) else "external id"
        raise StoreError(f"no document with {kind} {inert(ref)}: see `lacy-mlx store list --db {args.db}`")
    if args.json:
        print(json.dumps(asdict(doc), ensure_ascii=False))
        return
    print(f"row id: {doc.id}\nexternal id: {inert(doc.external_id or '')}\ntitle: {inert(doc.title or '')}\n"
          f"created: {doc.created}\nmetadata: {inert(json.dumps(doc.metadata, ensure_ascii=False))}")
    for c in doc.chunks:
        print(f"\n[chunk {c.ordinal}, characters {c.start}-{c.end}]\n{inert(c.text)}")
