"""``lacy-mlx generate --model M [--db FILE] --prompt TEXT``: one streamed answer, calls shown inline."""
from __future__ import annotations

import argparse
import sys

from lacy_mlx.cli.runtime_options import (
    EventPrinter,
    add_gate_options,
    add_model_options,
    add_prompt_options,
    add_sampling_options,
    build_lacy,
    event_json,
    sampling,
    stats_line,
)
from lacy_mlx.cli.terminal import inert
from lacy_mlx.errors import InputError
from lacy_mlx.runtime.events import output_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text with the gate and delegates",
        description="Stream one answer from an MLX model; where the gate fires, a delegate helps "
        "(retrieval from --db, or --helper-model) and the call is shown inline.",
    )
    add_model_options(p)
    p.add_argument("--prompt", required=True, help="the prompt text; - reads it from standard input")
    p.add_argument("--raw-prompt", action="store_true",
                   help="continue the prompt as plain text instead of applying the chat template")
    add_prompt_options(p)
    add_gate_options(p)
    add_sampling_options(p)
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    p.add_argument("--quiet", action="store_true", help="print only the text (no calls, sources or stats)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # `echo TEXT |` ends the prompt with a newline the user did not mean as part of it.
    text = sys.stdin.read().rstrip("\r\n") if args.prompt == "-" else args.prompt
    if not text.strip():
        raise InputError("the prompt is empty: give some text (--prompt TEXT, or --prompt - with text on stdin)")
    if args.raw_prompt and args.system_prompt:
        raise InputError("--system-prompt needs a conversation; it cannot go with --raw-prompt")
    samp = sampling(args)  # invalid settings fail before the model loads
    lacy = build_lacy(args)
    use_chat = not args.raw_prompt and (getattr(lacy.tokenizer, "has_chat_template", False) or args.system_prompt)
    system = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
    prompt = system + [{"role": "user", "content": text}] if use_chat else text
    printer = EventPrinter(sys.stdout)
    done = None
    for ev in lacy.stream(prompt, max_tokens=args.max_tokens, sampling=samp):
        if args.json:
            print(event_json(ev), flush=True)
        elif args.quiet:
            sys.stdout.write(inert(output_text(ev)))
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
