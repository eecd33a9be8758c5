"""Prefill and decode tokens/s of the default model (SmolLM2-135M-Instruct) on the CPU, by engine.

Engines, each in its own worker process (so each one's peak memory is its own):
- ``lacy``: ``lacy_mlx.load`` on the GGUF converted with its 4/8-bit blocks kept, the gate on
  (entropy mode, no delegate), through the runtime's decode loop (quantized layers on the CPU
  kernels of ``kernels/cpu_quant.cpp``);
- ``mlx-lm-f32`` / ``mlx-lm-q4``: mlx-lm's ``generate_step`` on the dequantized float32 / the
  quantized folder (``mlx-lm-q4`` is off by default: ~5 tokens/s of prefill);
- ``torch``: transformers' GGUF loader (dequantized, float32), greedy with its KV cache, in a
  process started without ``LD_PRELOAD`` (a preloaded OpenBLAS takes over torch's sgemm
  symbols and fights its thread pool: see benchmarks/encoder.py);
- ``llama.cpp``: llama-cpp-python on the GGUF itself, when it is importable (optional, it
  compiles llama.cpp: ``pip install llama-cpp-python``), loaded with ``use_extra_bufts=False``.

Peak memory: the worker's peak RSS (which includes its imports: mlx-lm imports transformers,
which imports torch when it is installed, ~250 MB) and, for MLX engines, MLX's own peak.
Every engine gets the same prompt ids (``--prompts`` lengths) and decodes ``--tokens`` greedy
tokens; prefill = time to the first token. Rounds are interleaved (engines rotated per round),
medians over ``--repeats``; ``--threads`` sets BLAS/torch/llama.cpp/kernel threads per worker.
Prints a table, the load average at the start and end (the machine may be shared: read ratios)
and one JSON line. Run it with OpenBLAS preloaded, as ``make`` does:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/decode_cpu.py
    LD_PRELOAD=... python benchmarks/decode_cpu.py --threads 1 --prompts 256 --repeats 5
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGINES = ("lacy", "mlx-lm-f32", "mlx-lm-q4", "torch", "llama.cpp")
DEFAULT_ENGINES = ("lacy", "mlx-lm-f32", "torch", "llama.cpp")
TEXT = ("Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
        "She was the first woman to win a Nobel Prize and the only person to win it in two sciences. ")
# The one-round measurement (llama-cpp-python 0.3.36 built from source), quoted when absent.
EARLIER_LLAMA_CPP = {"1": {"prefill_tps": 107, "decode_tps": 41, "prompt_tokens": "one prompt"},
                     "2": {"prefill_tps": 170, "decode_tps": 68.7, "prompt_tokens": 128}}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompt_ids(n: int) -> list[int]:
    """``n`` token ids of the benchmark text (SmolLM2's tokenizer, as converted by lacy-mlx)."""
    from lacy_mlx.defaults import default_model_dir
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tok = load_tokenizer(default_model_dir("quantized"))
    return tok.encode(TEXT * (1 + n // 30))[:n]


# ---- the engines: each returns run(ids, tokens) -> (token stamps from the start, ids generated) ----
def _mlx_engine(name: str, threads: int):
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    from lacy_mlx.defaults import default_model_dir
    from lacy_mlx.platform import _openblas_threads_api

    api = _openblas_threads_api()
    if api:
        api[1](threads)
    if name == "lacy":
        import lacy_mlx
        from lacy_mlx.runtime.events import Token
        from lacy_mlx.runtime.quantized import set_threads

        set_threads(threads)
        lacy = lacy_mlx.load(default_model_dir("quantized"))  # the gate: entropy mode (no <CALL> in SmolLM2)
        tok = lacy.tokenizer

        def run(ids: list[int], tokens: int):
            t0 = time.perf_counter()
            stamps, out = [], []
            for ev in lacy.stream(tok.decode(ids), max_tokens=tokens):
                if isinstance(ev, Token):
                    stamps.append(time.perf_counter() - t0)
                    out.append(ev.id)
            return stamps, out

        return run
    model, _ = load(str(default_model_dir("float32" if name == "mlx-lm-f32" else "quantized")))

    def run(ids: list[int], tokens: int):
        t0 = time.perf_counter()
        stamps, out = [], []
        for tok, _ in generate_step(mx.array(ids), model, max_tokens=tokens, prefill_step_size=2048):
            stamps.append(time.perf_counter() - t0)
            out.append(int(tok))
        return stamps, out

    return run


def _torch_engine(threads: int):
    import torch
    from transformers import AutoModelForCausalLM

    from lacy_mlx.defaults import gguf_path

    torch.set_num_threads(threads)
    path = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()

    @torch.inference_mode()
    def run(ids: list[int], tokens: int):
        t0 = time.perf_counter()
        stamps, out = [], []
        res = model(torch.tensor([ids]), use_cache=True)
        for _ in range(tokens):
            nxt = int(res.logits[0, -1].argmax())
            stamps.append(time.perf_counter() - t0)
            out.append(nxt)
            if len(out) == tokens:
                break
            res = model(torch.tensor([[nxt]]), past_key_values=res.past_key_values, use_cache=True)
        return stamps, out

    return run


def _llama_cpp_engine(threads: int):
    from llama_cpp import Llama

    from lacy_mlx.defaults import gguf_path

    llm = Llama(str(gguf_path()), n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=2048,
                use_extra_bufts=False, verbose=False)  # no repacking: this VM's AMX would SIGILL

    def run(ids: list[int], tokens: int):
        llm.reset()
        t0 = time.perf_counter()
        stamps, out = [], []
        for tok in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            stamps.append(time.perf_counter() - t0)
            out.append(int(tok))
            if len(out) == tokens:
                break
        return stamps, out

    return run


def serve(engine: str, threads: int) -> None:
    """Worker loop: ``{"ids": [...], "tokens": n}`` lines in, timing lines out, until stdin closes."""
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints go to stderr, the protocol keeps stdout
    if engine == "torch":
        run = _torch_engine(threads)
    elif engine == "llama.cpp":
        run = _llama_cpp_engine(threads)
    else:
        run = _mlx_engine(engine, threads)
    run(list(range(100, 116)), 4)  # warm-up
    for line in sys.stdin:
        req = json.loads(line)
        stamps, out = run(req["ids"], req["tokens"])
        decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
        reply = {"prefill_s": stamps[0], "decode_tps": decode, "ids": out, "peak_mb": peak_rss_mb()}
        if "mlx" in sys.modules:  # MLX's own peak (weights, cache, activations): the process less its imports
            reply["mlx_peak_mb"] = sys.modules["mlx.core"].get_peak_memory() / 1e6
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


class Worker:
    def __init__(self, engine: str, threads: int) -> None:
        env = dict(os.environ)
        if engine == "torch":
            env.pop("LD_PRELOAD", None)
        env["OPENBLAS_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", engine,
                                      "--threads", str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True)

    def ask(self, ids: list[int], tokens: int) -> dict:
        self.proc.stdin.write(json.dumps({"ids": ids, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a benchmark worker died (its error is above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def bench(engines: list[str], threads: int, prompts: list[int], tokens: int, repeats: int) -> dict:
    """Interleaved rounds for one thread count: ``{engine: {prompt_len: summary}}``."""
    workers = {e: Worker(e, threads) for e in engines}
    ids = {n: prompt_ids(n) for n in prompts}
    runs: dict[str, dict[int, list[dict]]] = {e: {n: [] for n in prompts} for e in engines}
    try:
        for r in range(repeats):
            order = engines[r % len(engines):] + engines[: r % len(engines)]
            for n in prompts:
                for e in order:
                    runs[e][n].append(workers[e].ask(ids[n], tokens))
    finally:
        for w in workers.values():
            w.close()
    out: dict = {}
    for e in engines:
        out[e] = {}
        for n in prompts:
            rs = runs[e][n]
            out[e][n] = {"prefill_tps": round(n / statistics.median(x["prefill_s"] for x in rs), 1),
                         "decode_tps": round(statistics.median(x["decode_tps"] for x in rs), 1),
                         "peak_mb": round(max(x["peak_mb"] for x in rs)), "ids": rs[0]["ids"]}
            if "mlx_peak_mb" in rs[0]:
                out[e][n]["mlx_peak_mb"] = round(max(x["mlx_peak_mb"] for x in rs))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", default=",".join(DEFAULT_ENGINES), help="comma-separated subset of " + ", ".join(ENGINES))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--prompts", default="16,256,1024", help="prompt lengths in tokens")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        serve(a.worker, int(a.threads))
        return 0
    from lacy_mlx.defaults import gguf_path
    from lacy_mlx.platform import openblas_preloaded

    engines = [e for e in a.engines.split(",") if e]
    if "llama.cpp" in engines and importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed: llama.cpp left out (the issue's earlier numbers are quoted)")
        engines.remove("llama.cpp")
    prompts = [int(n) for n in a.prompts.split(",")]
    gguf_mb = gguf_path().stat().st_size / 1e6
    record = {"benchmark": "decode_cpu", "openblas": openblas_preloaded(), "tokens": a.tokens, "repeats": a.repeats,
              "gguf_mb": round(gguf_mb, 1), "results": {}, "load_average": {"start": os.getloadavg()}}
    if "llama.cpp" not in engines:
        record["earlier_llama_cpp"] = EARLIER_LLAMA_CPP
    print(f"OpenBLAS preloaded: {openblas_preloaded()}, GGUF {gguf_mb:.0f} MB, {a.tokens} tokens decoded, "
          f"medians of {a.repeats} interleaved rounds")
    print(f"{'threads':>7} {'engine':>11} {'prompt':>6} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak MB':>8}"
          f" {'MLX MB':>7} {'same ids as lacy':>16}")
    for t in (int(x) for x in a.threads.split(",")):
        res = bench(engines, t, prompts, a.tokens, a.repeats)
        record["results"][str(t)] = res
        for e in engines:
            for n in prompts:
                r = res[e][n]
                same = r["ids"] == res[engines[0]][n]["ids"]
                mlx_mb = f"{r['mlx_peak_mb']:7.0f}" if "mlx_peak_mb" in r else f"{'-':>7}"
                print(f"{t:>7} {e:>11} {n:>6} {r['prefill_tps']:14.1f} {r['decode_tps']:13.1f} {r['peak_mb']:8.0f}"
                      f" {mlx_mb} {str(same):>16}")
        if "llama.cpp" not in engines and str(t) in EARLIER_LLAMA_CPP:
            ref = EARLIER_LLAMA_CPP[str(t)]
            print(f"{t:>7} {'llama.cpp*':>11} {'':>6} {ref['prefill_tps']:14.1f} {ref['decode_tps']:13.1f}"
                  f" {'':>8}  (* the issue's earlier measurement)")
    record["load_average"]["end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min): at the start {record['load_average']['start']}, "
          f"at the end {record['load_average']['end']} on {os.cpu_count()} cores")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
