"""``lacy-mlx serve [--model M] [--db FILE] [--host H] [--port P]``: the OpenAI-compatible server."""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from lacy_mlx.cli.runtime_options import add_gate_options, add_model_options, build_lacy
from lacy_mlx.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over the OpenAI API (chat, completions, embeddings)",
        description="An OpenAI-compatible HTTP server for one model with the gate and delegates. "
        "Binds 127.0.0.1 by default; another address needs an API key. See docs/server.md.",
    )
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--api-key", help="require Authorization: Bearer KEY (or set LACY_MLX_API_KEY)")
    p.add_argument("--api-key-file", type=Path, help="read the API key from this file")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="allow this browser origin besides localhost ones (repeatable; '*' for any)")
    p.add_argument("--queue-size", type=int, default=8, help="requests waiting behind the running one (default 8)")
    p.add_argument("--max-tokens-cap", type=int, default=4096, help="largest max_tokens accepted (default 4096)")
    p.add_argument("--default-max-tokens", type=int, default=512, help="max_tokens when a request gives none")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--model-id", help="the model name clients send (default: the model folder's name)")
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    add_gate_options(p)
    p.set_defaults(func=run)


def api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else --api-key-file's first line, else $LACY_MLX_API_KEY."""
    if args.api_key:
        return str(args.api_key)
    if args.api_key_file:
        try:
            return args.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"cannot read the API key file {args.api_key_file}: {exc}") from exc
    return os.environ.get("LACY_MLX_API_KEY") or None


def run(args: argparse.Namespace) -> int:
    from lacy_mlx.server import ServerConfig, serve

    config = ServerConfig(host=args.host, port=args.port, api_key=api_key(args), cors_origins=tuple(args.cors_origin),
                          max_body_bytes=args.max_body_bytes, max_tokens_cap=args.max_tokens_cap,
                          default_max_tokens=args.default_max_tokens, queue_size=args.queue_size,
                          model_id=args.model_id)
    lacy = build_lacy(args)  # no --model: load() picks the embedded default model itself
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` shuts down as Ctrl-C does: running requests end
    serve(lacy, config, verbose=not args.quiet)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
