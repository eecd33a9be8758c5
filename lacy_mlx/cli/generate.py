"""``lacy-mlx generate --model M [--db FILE] --prompt TEXT``: one streamed answer, calls shown inline."""
from __future__ import annotations

import argparse
import sys

from lacy_mlx.cli.runtime_options import (
    EventPrinter,
    add_gate_options,
    add_model_options,
    add_sampling_options,
    build_lacy,
    event_json,
    sampling,
    stats_line,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text with the gate and delegates",
        description="Stream one answer from an MLX model; where the gate fires, a delegate helps "
        "(retrieval from --db, or --helper-model) and the call is shown inline.",
    )
    add_model_options(p)
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--raw-prompt", action="store_true",
                   help="continue the prompt as plain text instead of applying the chat template")
    add_gate_options(p)
    add_sampling_options(p)
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    p.add_argument("--quiet", action="store_true", help="print only the text (no calls, sources or stats)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lacy = build_lacy(args)
    use_chat = not args.raw_prompt and getattr(lacy.tokenizer, "has_chat_template", False)
    prompt = [{"role": "user", "content": args.prompt}] if use_chat else args.prompt
    printer = EventPrinter(sys.stdout)
    done = None
    for ev in lacy.stream(prompt, max_tokens=args.max_tokens, sampling=sampling(args)):
        if args.json:
            print(event_json(ev), flush=True)
        elif args.quiet:
            if type(ev).__name__ == "Token":
                sys.stdout.write(ev.text)
        else:
            printer.event(ev)
        if type(ev).__name__ == "Done":
            done = ev
    if args.quiet:
        sys.stdout.write("\n")
    elif not args.json:
        printer.end()
        if done is not None:
            print(printer.paint("stats", stats_line(done)), file=sys.stderr)
    return 0
