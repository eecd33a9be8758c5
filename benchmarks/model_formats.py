"""Which representation of the default model (SmolLM2-135M-Instruct) to run on this device.

Converts the GGUF once per representation (kept 4-bit/8-bit quantized with float32 scales,
dequantized float32, float16, bfloat16) into a temporary folder, then times prefill of a
``--prompt-tokens`` prompt and greedy decode of ``--tokens`` tokens with mlx-lm's
``generate_step``, the representations interleaved over ``--repeats`` rounds (medians), and
the max |logit diff| of each against the float32 one. Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm import load
from mlx_lm.generate import generate_step

from lacy_mlx.convert import convert
from lacy_mlx.defaults import gguf_path
from lacy_mlx.platform import openblas_preloaded

TEXT = ("Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
        "She was the first woman to win a Nobel Prize and the only person to win it in two sciences. ")
FORMATS = {"quantized": {}, "float32": {"dtype": "float32", "dequantize": True},
           "float16": {"dtype": "float16", "dequantize": True}, "bfloat16": {"dtype": "bfloat16", "dequantize": True}}


def time_one(model, prompt: list[int], tokens: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) of one greedy generation."""
    t0 = time.perf_counter()
    stamps = []
    for _ in generate_step(mx.array(prompt), model, max_tokens=tokens, prefill_step_size=2048):
        stamps.append(time.perf_counter())
    return len(prompt) / (stamps[0] - t0), (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ", ".join(FORMATS))
    args = p.parse_args(argv)
    names = args.formats.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="lacy-formats-"))
    models = {}
    for name in names:
        convert(gguf_path(), tmp / name, **FORMATS[name])
        models[name] = load(str(tmp / name))
    tok = models[names[0]][1]
    prompt = (tok.encode(TEXT * (1 + args.prompt_tokens // 30)))[: args.prompt_tokens]
    ref_name = "float32" if "float32" in models else names[0]
    ref = np.array(models[ref_name][0](mx.array([prompt[:64]]))[0].astype(mx.float32))
    diffs = {n: float(np.abs(np.array(m(mx.array([prompt[:64]]))[0].astype(mx.float32)) - ref).max())
             for n, (m, _) in models.items()}
    for name in names:  # warm-up
        time_one(models[name][0], prompt[:16], 4)
    runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            runs[name].append(time_one(models[name][0], prompt, args.tokens))
    sizes = {n: sum(f.stat().st_size for f in (tmp / n).glob("*.safetensors")) for n in names}
    summary = {"benchmark": "model_formats", "device": str(mx.default_device()), "openblas": openblas_preloaded(),
               "prompt_tokens": len(prompt), "tokens": args.tokens, "repeats": args.repeats, "formats": {}}
    print(f"device {mx.default_device()}, OpenBLAS preloaded: {openblas_preloaded()}, prompt {len(prompt)} tokens")
    print(f"{'format':>10} {'prefill tok/s':>14} {'decode tok/s':>13} {'MB':>6} {'max|dlogit| vs ' + ref_name:>22}")
    for name in names:
        pre = statistics.median(x[0] for x in runs[name])
        dec = statistics.median(x[1] for x in runs[name])
        summary["formats"][name] = {"prefill_tps": round(pre, 2), "decode_tps": round(dec, 2),
                                    "mb": round(sizes[name] / 1e6, 1), "max_logit_diff": round(diffs[name], 5)}
        print(f"{name:>10} {pre:14.1f} {dec:13.2f} {sizes[name] / 1e6:6.0f} {diffs[name]:22.5f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
