"""How an app embeds lacy-mlx: generation on a background thread, tokens to a UI callback,
a stop button (cancel), and the stats at the end.

    python examples/embed_in_app.py                          # the embedded default model
    python examples/embed_in_app.py --model path/to/mlx-model --stop-after 20
"""
from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable

import lacy_mlx
from lacy_mlx.runtime.stream import Stream


class Assistant:
    """One ``Lacy`` per app, used from one worker thread at a time (a ``Lacy`` is not thread-safe)."""

    def __init__(self, lacy: lacy_mlx.Lacy) -> None:
        self.lacy = lacy
        self.stream: Stream | None = None
        self.thread: threading.Thread | None = None

    def ask(self, question: str, on_text: Callable[[str], None], on_done: Callable[[lacy_mlx.Done], None],
            max_tokens: int = 128) -> None:
        """Start answering; ``on_text`` gets each text piece, ``on_done`` the stats (worker thread)."""
        self.stream = self.lacy.stream([{"role": "user", "content": question}], max_tokens=max_tokens)
        stream = self.stream

        def run() -> None:
            for ev in stream:
                if isinstance(ev, lacy_mlx.Token) and ev.text:
                    on_text(ev.text)
                elif isinstance(ev, lacy_mlx.Call):
                    on_text(f" [asking: {ev.query!r}]")
                elif isinstance(ev, lacy_mlx.Done):
                    if ev.trailing_text:
                        on_text(ev.trailing_text)
                    on_done(ev)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """The stop button: safe from any thread; the answer ends with finish_reason 'cancelled'."""
        if self.stream is not None:
            self.stream.cancel()

    def wait(self, timeout: float = 600.0) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="MLX model folder (default: the embedded model)")
    p.add_argument("--db", help="knowledge store")
    p.add_argument("--question", default="Where was Marie Curie born?")
    p.add_argument("--stop-after", type=int, default=0, help="press 'stop' after this many text pieces")
    args = p.parse_args(argv)

    app = Assistant(lacy_mlx.load(args.model, db=args.db))
    pieces: list[str] = []

    def on_text(text: str) -> None:
        pieces.append(text)
        sys.stdout.write(text)
        sys.stdout.flush()
        if args.stop_after and len(pieces) == args.stop_after:
            app.stop()  # from the callback here; a UI thread would do the same

    def on_done(done: lacy_mlx.Done) -> None:
        print(f"\n[{done.finish_reason}: {done.tokens} tokens, {done.calls} calls, "
              f"{done.tokens_per_s:.1f} tokens/s, gate {done.gate_s * 1e3:.1f} ms]")

    app.ask(args.question, on_text, on_done)
    app.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
