"""`lacy-mlx serve` under load: N concurrent streaming clients on loopback for a bounded time.

    python benchmarks/serve.py                         # a random 4-layer llama, 4 clients, 20 s
    python benchmarks/serve.py --clients 8 --queue-size 2 --seconds 30 --model path/to/mlx-model

Prints requests/s, tokens/s (and their ratio to the library called directly in the same process), time to first token (p50/p95) and how every request ended: completed,
or a clean 429 (queue full) / 503. Anything else is counted as a failure and exits 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def client_loop(url: str, model: str, stop_at: float, max_tokens: int, out: dict, lock: threading.Lock) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "Where was Marie Curie born?"}],
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=120) as http:
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            first, tokens, status = None, 0, None
            try:
                with http.stream("POST", f"{url}/chat/completions", json=body) as r:
                    status = r.status_code
                    if status == 200:
                        for line in r.iter_lines():
                            if line.startswith("data: {"):
                                data = json.loads(line[6:])
                                if "error" in data:
                                    status = "error-event"
                                elif data.get("usage"):
                                    tokens = data["usage"]["completion_tokens"]
                                elif first is None and data["choices"] and data["choices"][0]["delta"].get("content"):
                                    first = time.monotonic() - t0
                    else:
                        r.read()
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            with lock:
                out.setdefault(status, 0)
                out[status] += 1
                if status == 200:
                    out.setdefault("ttft", []).append(first if first is not None else time.monotonic() - t0)
                    out["tokens"] = out.get("tokens", 0) + tokens
            if status in (429, 503):
                time.sleep(0.05)  # a client backing off, as the openai client would


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="MLX model folder (default: a random 4-layer llama built here)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--queue-size", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4, help="library/server rounds, interleaved")
    args = p.parse_args(argv)

    import lacy_mlx
    from lacy_mlx.server import LacyServer, ServerConfig

    if args.model is None:
        from runtime_models import build_model

        args.model = str(build_model(Path(tempfile.mkdtemp()) / "bench-llama", hidden=256, layers=4))
    lacy = lacy_mlx.load(args.model, gate=lacy_mlx.GateConfig(mode="entropy", entropy_threshold=99.0))
    # The peer: the same request through the library in this process (no HTTP, no queue), with
    # the prompt cache on as the server has it.
    msgs = [{"role": "user", "content": "Where was Marie Curie born?"}]
    lacy.reuse_prompt_cache = True

    def library_rates(n: int) -> list[float]:
        rates = []
        for _ in range(n):
            t = time.monotonic()
            k = lacy.generate(msgs, max_tokens=args.max_tokens).stats.tokens
            rates.append(k / (time.monotonic() - t))
        return rates

    library_rates(3)  # warm-up
    server = LacyServer(lacy, ServerConfig(port=0, queue_size=args.queue_size)).start()
    out: dict = {}
    lock = threading.Lock()
    ratios, wall = [], 0.0
    # Rounds alternate the library and the server, so a shared machine's load changes hit both.
    for _ in range(args.rounds):
        library = float(np.median(library_rates(3)))
        tokens_before = out.get("tokens", 0)
        t0 = time.monotonic()
        stop_at = t0 + args.seconds / args.rounds
        threads = [threading.Thread(target=client_loop, args=(server.url, server.model_id, stop_at, args.max_tokens,
                                                              out, lock)) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 300)
        took = time.monotonic() - t0
        wall += took
        ratios.append((out.get("tokens", 0) - tokens_before) / took / library)
    server.close()

    done = out.get(200, 0)
    ttft = np.array(out.get("ttft", [0.0])) * 1e3
    clean = {k: v for k, v in out.items() if k in (429, 503)}
    failed = {k: v for k, v in out.items() if k not in (200, 429, 503, "ttft", "tokens")}
    print(f"{args.clients} clients, {wall:.1f} s of serving, queue size {args.queue_size}, max_tokens {args.max_tokens}")
    print(f"completed {done} requests: {done / wall:.2f} requests/s, {out.get('tokens', 0) / wall:.1f} tokens/s")
    print(f"server tokens/s over the library's, same process, per round: "
          f"{' '.join(f'{r:.2f}' for r in ratios)} (median {np.median(ratios):.2f})")
    print(f"time to first token: p50 {np.percentile(ttft, 50):.0f} ms, p95 {np.percentile(ttft, 95):.0f} ms")
    print(f"clean refusals: {clean or 'none'}; failures: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
