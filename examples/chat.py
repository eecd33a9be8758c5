"""Terminal chat over a knowledge store: calls show inline, sources after each answer.

    python examples/chat.py --db kb.db                  # the embedded default model
    python examples/chat.py --model path/to/mlx-model --db kb.db --max-tokens 128

One line per turn; an empty line or end of input quits. The conversation's KV cache is kept
between turns (``reuse_prompt_cache``), so each turn prefills only its new messages.
"""
from __future__ import annotations

import argparse
import sys

import lacy_mlx
from lacy_mlx.cli.runtime_options import EventPrinter, stats_line
from lacy_mlx.runtime.events import output_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="MLX model folder (default: the embedded model)")
    p.add_argument("--db", help="knowledge store (lacy-mlx ingest builds one)")
    p.add_argument("--max-tokens", type=int, default=128)
    args = p.parse_args(argv)

    lacy = lacy_mlx.load(args.model, db=args.db)
    lacy.reuse_prompt_cache = True
    printer = EventPrinter(sys.stdout)
    history: list[dict[str, str]] = []
    while True:
        sys.stdout.write("you> ")
        sys.stdout.flush()
        line = sys.stdin.readline().strip()
        if not line:
            return 0
        history.append({"role": "user", "content": line})
        stream = lacy.stream(history, max_tokens=args.max_tokens)
        answer = []
        for ev in stream:
            printer.event(ev)
            answer.append(output_text(ev))
        printer.end()
        history.append({"role": "assistant", "content": "".join(answer)})
        assert stream.done is not None
        print(f"[{stats_line(stream.done)}, {stream.done.cached_tokens} prompt tokens from the cache]")


if __name__ == "__main__":
    sys.exit(main())
