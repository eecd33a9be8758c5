"""``lacy-mlx store stats|delete|vacuum|list --db FILE``: look after a store."""
from __future__ import annotations

import argparse
import json
import sys

from lacy_mlx.errors import StoreError
from lacy_mlx.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect and maintain a store", description="Store maintenance.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    stats = verbs.add_parser("stats", help="counts, embedder, sizes")
    stats.add_argument("--json", action="store_true", help="print JSON")
    delete = verbs.add_parser("delete", help="delete documents with their chunks and vectors")
    delete.add_argument("ids", nargs="+", metavar="ID", help="external ids (e.g. file URIs) or numeric document ids")
    verbs.add_parser("vacuum", help="reclaim the space of deleted rows (rebuilds the vector table)")
    lst = verbs.add_parser("list", help="list documents")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    mode = verbs.add_parser("mode", help="set the default search path")
    mode.add_argument("mode", choices=["fast", "exact"])
    for v in (stats, delete, verbs.choices["vacuum"], lst, mode):
        v.add_argument("--db", required=True, help="store file")
    p.set_defaults(func=run)


def migration_progress(what: str, done: int, total: int) -> None:
    """Print a store upgrade's steps on stderr (``Store.open(progress=...)``)."""
    print(f"upgrading the store: {what} {done:,}/{total:,} chunks", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    read_only = args.verb in ("stats", "list")
    with Store.open(args.db, create=False, read_only=read_only,
                    progress=None if read_only else migration_progress) as store:
        if args.verb == "stats":
            stats = store.stats()
            if args.json:
                print(json.dumps(stats, indent=2))
            else:
                for key, value in stats.items():
                    print(f"{key:>20}: {value}")
        elif args.verb == "delete":
            missing = [ref for ref in args.ids if not store.delete(int(ref) if ref.isdigit() else ref)]
            print(f"deleted {len(args.ids) - len(missing)} document(s)")
            if missing:
                raise StoreError(f"no document with id {', '.join(missing)}: see `lacy-mlx store list --db {args.db}`")
        elif args.verb == "vacuum":
            sizes = store.vacuum()
            print(f"vacuumed: {sizes['before_bytes']:,} -> {sizes['after_bytes']:,} bytes")
        elif args.verb == "list":
            for i, (doc_id, ext, title) in enumerate(store.documents()):
                if i >= args.limit:
                    break
                print(f"{doc_id:>6}  {title or '':<30}  {ext or ''}")
        elif args.verb == "mode":
            store.set_search_mode(args.mode)
            print(f"default search mode: {args.mode}")
    return 0
