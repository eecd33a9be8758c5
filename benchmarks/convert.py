"""Conversion seconds and peak memory: lacy-mlx convert against mlx_lm.convert, same run, same model.

Builds a ~100M-parameter llama-style model with random weights (hidden 768, 10 layers, vocab
16384, untied head), saves it as model.safetensors and as pytorch_model.bin, then converts:
lacy from safetensors, lacy from .bin, and mlx_lm.convert from safetensors (the peer; it reads
only safetensors). Each conversion runs in a fresh child process so its peak RSS
(VmHWM on Linux, ru_maxrss on macOS) is its own; seconds cover the conversion call only, not the imports (mlx-lm, which both load). Prints medians,
ratios against the peer, and one JSON line.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/convert.py [--reps 3] [--dtype float16]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    # Linux: VmHWM, which exec resets (ru_maxrss would carry the forking parent's peak over).
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def child(tool: str, src: str, out: str, dtype: str, quantize: int | None) -> None:
    """Run one conversion and print {"seconds", "peak_mb", "base_mb"} as JSON."""
    import contextlib
    import io

    import mlx_lm.utils  # noqa: F401  (both tools need mlx-lm; its import, ~seconds, is not timed)

    if tool == "lacy":
        from lacy_mlx.convert import convert as run
    else:
        from mlx_lm.convert import convert as mlx_convert

        def run(src, out, dtype, quantize):
            with contextlib.redirect_stdout(io.StringIO()):
                mlx_convert(src, out, dtype=dtype, quantize=quantize is not None, q_bits=quantize)
    base = _rss_mb()
    start = time.perf_counter()
    run(src, out, dtype=dtype, quantize=quantize)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": _rss_mb(), "base_mb": base}))


def build(work: Path, hidden: int, layers: int, vocab: int) -> tuple[Path, Path, int]:
    """Save the random model twice; return (safetensors folder, .bin folder, parameter count)."""
    import torch
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                        num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                        max_position_embeddings=2048, tie_word_embeddings=False)
    model = T.AutoModelForCausalLM.from_config(cfg)
    st, pt = work / "st", work / "bin"
    model.save_pretrained(str(st))
    pt.mkdir()
    shutil.copy(st / "config.json", pt / "config.json")
    torch.save(model.state_dict(), pt / "pytorch_model.bin")
    words = {"<unk>": 0} | {f"w{i}": i for i in range(1, vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    for folder in (st, pt):
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(str(folder))
    return st, pt, sum(p.numel() for p in model.parameters())


def measure(tool: str, src: Path, work: Path, reps: int, dtype: str, quantize: int | None) -> dict:
    runs = []
    for i in range(reps):
        out = work / f"out-{tool}-{src.name}-{i}"
        cmd = [sys.executable, __file__, "--child", tool, str(src), str(out), "--dtype", dtype]
        if quantize:
            cmd += ["--quantize", str(quantize)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"{tool} failed:\n{proc.stderr[-2000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
        "delta_mb": statistics.median(r["peak_mb"] - r["base_mb"] for r in runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--quantize", type=int, choices=[4, 8], default=None)
    ap.add_argument("--child", nargs=3, metavar=("TOOL", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, dtype=args.dtype, quantize=args.quantize)
        return
    from lacy_mlx.platform import openblas_preloaded

    work = Path(tempfile.mkdtemp(prefix="lacy-bench-convert-"))
    try:
        t0 = time.perf_counter()
        st, pt, n_params = build(work, args.hidden, args.layers, args.vocab)
        print(f"model: {n_params / 1e6:.1f}M parameters, float32 on disk "
              f"({(st / 'model.safetensors').stat().st_size / 1e6:.0f} MB), built in {time.perf_counter() - t0:.1f}s; "
              f"output {args.dtype}{f', {args.quantize}-bit' if args.quantize else ''}; "
              f"openblas preloaded: {openblas_preloaded()}; {args.reps} reps, medians")
        cases = {
            "mlx_lm.convert (safetensors)": measure("mlx_lm", st, work, args.reps, args.dtype, args.quantize),
            "lacy convert (safetensors)": measure("lacy", st, work, args.reps, args.dtype, args.quantize),
            "lacy convert (pytorch_model.bin)": measure("lacy", pt, work, args.reps, args.dtype, args.quantize),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peer = cases["mlx_lm.convert (safetensors)"]
    print(f"{'case':34} {'seconds':>8} {'x peer':>7} {'peak MB':>8} {'delta MB':>9} {'x peer':>7}")
    for name, r in cases.items():
        print(f"{name:34} {r['seconds']:8.2f} {r['seconds'] / peer['seconds']:7.2f} {r['peak_mb']:8.0f} "
              f"{r['delta_mb']:9.0f} {r['delta_mb'] / max(peer['delta_mb'], 1):7.2f}")
    print(json.dumps({"benchmark": "convert", "params": n_params, "dtype": args.dtype, "quantize": args.quantize,
                      "reps": args.reps, "cases": cases, "openblas": openblas_preloaded()}))


if __name__ == "__main__":
    main()
