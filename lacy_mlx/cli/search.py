"""``lacy-mlx search "text" --db FILE -k 5``: nearest chunks as a table or JSON."""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict

from lacy_mlx.cli.terminal import inert
from lacy_mlx.errors import InputError
from lacy_mlx.store import DEFAULT_TEXT_MODE, RETRIEVAL_MODES, SearchHit, Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search a store by text", description="Print the chunks nearest to a query.")
    p.add_argument("query", help="text to search for")
    p.add_argument("--db", required=True, help="store file")
    p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep documents whose metadata KEY equals VALUE (repeatable; VALUE parsed as JSON if it can be)")
    p.add_argument("--mode", choices=RETRIEVAL_MODES, default=None,
                   help=f"rankings to use: word matches (keyword, BM25), meaning (vector) or both fused "
                        f"(hybrid; the default is {DEFAULT_TEXT_MODE})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--exact", action="store_true", help="scan with sqlite-vec instead of the fast mirror")
    mode.add_argument("--fast", action="store_true", help="use the in-memory mirror (the default for new stores)")
    p.add_argument("--json", action="store_true", help="print JSON lines, one hit per line (full text)")
    p.add_argument("--full", action="store_true", help="print each chunk's whole text instead of one clipped line")
    p.set_defaults(func=run)


def parse_filters(items: list[str]) -> dict:
    """``["lang=en", "year=2020"]`` -> ``{"lang": "en", "year": 2020}``."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"--filter expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def format_table(hits: list[SearchHit], width: int | None = None, *, full: bool = False) -> str:
    """Hits as a fixed-width table: rank, score, source and chunk position, then the text clipped to
    the terminal (``full``: the whole chunk text under each row). Control characters are made inert."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    lines = [f"{'#':>2}  {'score':>6}  {'source':<28}  text"]
    for rank, h in enumerate(hits, 1):
        source = inert((h.title or h.external_id or str(h.document_id))[:24]) + f" [{h.ordinal}]"
        if full:
            lines.append(f"{rank:>2}  {h.score:6.3f}  {source}")
            lines += ["    " + line for line in inert(h.text).splitlines()] + [""]
            continue
        text = inert(" ".join(h.text.split()))
        room = max(20, width - 42)
        lines.append(f"{rank:>2}  {h.score:6.3g}  {source:<28}  {text[:room - 1] + '…' if len(text) > room else text}")
    return "\n".join(lines).rstrip("\n")


def run(args: argparse.Namespace) -> int:
    fast = True if args.fast else (False if args.exact else None)
    with Store.open(args.db, create=False, read_only=True) as store:
        hits = store.search(args.query, k=args.k, filters=parse_filters(args.filter), fast=fast, mode=args.mode)
    if args.json:
        for h in hits:
            print(json.dumps(asdict(h), ensure_ascii=False))
    elif hits:
        print(format_table(hits, full=args.full))
    else:
        print("no results")
    return 0
