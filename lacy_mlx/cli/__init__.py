"""The ``lacy-mlx`` command line: one module per subcommand, each with ``register(subparsers)``.

Command modules only parse arguments and call library functions; they never hold logic the
Python API lacks. A module registers its subcommand with ``set_defaults(func=...)``, where
``func(args) -> int`` is the exit status.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from importlib import import_module

from lacy_mlx import __version__
from lacy_mlx.errors import LacyError

# Subcommand modules under lacy_mlx.cli, in the order `lacy-mlx --help` lists them.
COMMANDS = ["ingest", "search", "store", "convert", "train", "generate", "chat", "qa", "eval", "serve"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests to check every command is documented)."""
    parser = argparse.ArgumentParser(
        prog="lacy-mlx",
        description="Small language models on MLX that know when to ask for help.",
    )
    parser.add_argument("--version", action="version", version=f"lacy-mlx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        import_module(f"lacy_mlx.cli.{name}").register(sub)
    return parser


# ``name=value`` as library messages write a keyword argument (value quoted, a word, True or ...).
_KEYWORD = re.compile(r"\b([a-z][a-z_]*)=(?:'([^']*)'|\"([^\"]*)\"|(True|\.\.\.|[\w.\-/]+))")


@functools.lru_cache(maxsize=1)
def _flags() -> frozenset[str]:
    """Every long option of every subcommand."""
    found: set[str] = set()
    stack = [build_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            found.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return frozenset(found)


def cli_words(message: str) -> str:
    """A library message in the CLI's terms: ``query='text'`` becomes ``--query text``, ``fast=True``
    ``--fast``, wherever the CLI has that option; other keyword arguments stay as they are."""

    def to_flag(m: re.Match[str]) -> str:
        flag = "--" + m.group(1).replace("_", "-")
        if flag not in _flags():
            return m.group(0)
        value = next(g for g in m.groups()[1:] if g is not None)
        return flag if value == "True" else f"{flag} {value}"

    return _KEYWORD.sub(to_flag, message)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lacy-mlx`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LacyError as exc:
        from lacy_mlx.cli.terminal import inert

        print(f"lacy-mlx: error: {inert(cli_words(str(exc)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lacy-mlx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly. Point stdout at /dev/null so the
        # interpreter's final flush does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process killed by it


if __name__ == "__main__":  # python -m lacy_mlx.cli
    sys.exit(main())
