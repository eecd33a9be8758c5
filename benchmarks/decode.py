"""Decode speed of the cascade runtime against plain mlx-lm, on the same model in one process.

Configurations, interleaved over ``--repeats`` rounds (medians reported):

- ``mlx_lm``: ``mlx_lm.generate.generate_step`` greedy decoding (the peer);
- ``lacy_off``: lacy-mlx with the gate off (the runtime's own loop: detokenizer, events);
- ``lacy_gate``: the gate on (mode ``either``: entropy, p(<CALL>), top-1, argmax every step) but
  thresholds it never reaches;
- ``lacy_calls``: calls at a fixed rate (a call budget of ``--call-rate``), each a retrieval from a
  store of ``--chunks`` chunks (HashedEmbedder) with inline evidence injection.

It also times the gate op alone on one logits row and divides by a decode step. Default model: a
~100M-parameter llama with random weights built here; ``--model PATH`` loads a real one and
``--model default`` the embedded SmolLM2-135M-Instruct (prompted with English text; a model
without <CALL> injects by prefix, so each call re-reads the prompt). Runs unchanged on a GPU
(MLX's default device). Prints ratios and one JSON line.
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
from mlx.utils import tree_flatten, tree_map
from mlx_lm.generate import generate_step

import lacy_mlx
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.gate import gate_params
from lacy_mlx.kernels.dispatch import gate_stats
from lacy_mlx.platform import openblas_preloaded
from lacy_mlx.runtime import GateConfig
from lacy_mlx.tokens import special_ids
from lacy_mlx.store import Store

PROMPT = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16"
TEXT_PROMPT = "Marie Curie was a physicist and chemist. She was born in"


def build_tokenizer(folder: Path, vocab: int):
    """A word-level tokenizer of ``vocab`` entries (w0, w1, ... plus the lacy tokens), via mlx-lm's loader."""
    from mlx_lm.utils import load_tokenizer
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<|endoftext|>", "<CALL>", "<EVIDENCE>", "</EVIDENCE>"]
    words = {tok: i for i, tok in enumerate(specials)}
    words.update({f"w{i}": len(specials) + i for i in range(vocab - len(specials))})
    tok = Tokenizer(models.WordLevel(words, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
    }))
    return load_tokenizer(folder)


def build_model(vocab: int, hidden: int, layers: int, seed: int):
    from mlx_lm.models import llama

    mx.random.seed(seed)
    args = llama.ModelArgs.from_dict({
        "model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers,
        "intermediate_size": int(hidden * 8 / 3) // 64 * 64, "num_attention_heads": hidden // 64,
        "num_key_value_heads": hidden // 64, "rms_norm_eps": 1e-5, "vocab_size": vocab,
        "tie_word_embeddings": True,
    })
    model = llama.Model(args)
    # Random init with logits spread enough that greedy decoding does not collapse on one token.
    model.update(tree_map(lambda p: p * 2.0 if p.ndim == 2 else p, model.parameters()))
    mx.eval(model.parameters())
    return model


def build_store(path: Path, chunks: int) -> Store:
    store = Store.open(path, embedder=HashedEmbedder(dim=384))
    if store.count()["chunks"] < chunks:
        docs = [{"external_id": f"d{i}", "title": f"doc {i}",
                 "text": f"w{i % 997} w{(i * 7) % 1009} fact {i} about w{(i * 13) % 1013} and w{i % 31}."}
                for i in range(chunks)]
        store.add_documents(docs, batch_size=2000)
    return store


def run_mlx_lm(model, prompt_ids, n: int) -> float:
    """Tokens/s of mlx-lm's greedy generate_step: (n - 1) tokens between the first and the last."""
    stamps = [time.perf_counter() for _ in generate_step(mx.array(prompt_ids), model, max_tokens=n)]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def run_lacy(lacy, n: int, gate: GateConfig, prompt: str = PROMPT) -> dict:
    """Tokens/s of lacy-mlx timed the same way (first to last token event), plus its Done stats."""
    stamps, done = [], None
    for ev in lacy.stream(prompt, max_tokens=n, gate=gate):
        if type(ev).__name__ == "Token":
            stamps.append(time.perf_counter())
        elif type(ev).__name__ == "Done":
            done = ev
    # Prefix injection holds a sentence's tokens until it ends, so token events arrive in bursts:
    # the runtime's own rate (tokens after the first step over the time after it) is the fair one.
    tps = done.tokens_per_s if lacy.injection == "prefix" else (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"tps": tps, "calls": done.calls, "steps": done.steps,
            "gate_s": done.gate_s, "syncs": done.host_syncs, "retrieval_s": done.retrieval_s,
            "inject_s": done.inject_s}


def time_gate_op(vocab: int, call_id: int, iters: int = 50) -> float:
    """Seconds per gate evaluation on one (1, vocab) float32 logits row, evaluated alone."""
    logits = mx.random.normal((1, vocab)) * 4
    params = gate_params("either", 1e9, 1.0)
    mx.eval(logits, params)
    for _ in range(5):
        mx.eval(*gate_stats(logits, call_id, params).__dict__.values())
    t0 = time.perf_counter()
    for _ in range(iters):
        mx.eval(*gate_stats(logits, call_id, params).__dict__.values())
    return (time.perf_counter() - t0) / iters


def paired_step_overhead(model, prompt_ids, specials, pairs: int) -> dict:
    """Decode-step time with the gate vs without, alternating on one KV cache (paired medians).

    Each pair times one step through lacy-mlx's Decoder without the gate (mlx-lm's logsumexp +
    sampler) and one with it (gate statistics, decision, masked argmax, packed read), each
    evaluated and then trimmed off the cache, so both see the same context. Alternating cancels
    the slow drift of a shared machine that end-to-end tokens/s suffers from.
    """
    from lacy_mlx.runtime.decoder import Decoder

    dec = Decoder(model, call_id=specials.call, masked_ids=specials.all)
    params = gate_params("either", 1e9, 1.0)
    first = dec.feed(prompt_ids, None)
    token = first.read()[0]
    plain, gated = [], []
    for i in range(pairs + 2):
        times = {}
        for name, prm in (("plain", None), ("gated", params))[:: 1 if i % 2 else -1]:
            t0 = time.perf_counter()
            dec.feed([token], prm).read()
            times[name] = time.perf_counter() - t0
            dec.trim(1)
        if i >= 2:  # warm-up pairs
            plain.append(times["plain"])
            gated.append(times["gated"])
    diffs = [g - p for g, p in zip(gated, plain)]
    step = statistics.median(plain)
    return {"step_ms": round(1e3 * step, 3), "gated_step_ms": round(1e3 * statistics.median(gated), 3),
            "overhead_ms": round(1e3 * statistics.median(diffs), 3),
            "overhead_share": round(statistics.median(diffs) / step, 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="an MLX model folder or repo id, or 'default' for the embedded SmolLM2 "
                   "(default: a random ~100M llama)")
    p.add_argument("--tokens", type=int, default=32, help="tokens per run (default 32)")
    p.add_argument("--repeats", type=int, default=4, help="rounds, medians reported (default 4)")
    p.add_argument("--chunks", type=int, default=10_000, help="store size for lacy_calls (default 10000)")
    p.add_argument("--call-rate", type=float, default=0.1, help="call budget of lacy_calls (default 0.1)")
    p.add_argument("--pairs", type=int, default=20, help="paired gated/plain steps timed (default 20)")
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32_000)
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lacy-bench-"))
    prompt = PROMPT
    if args.model:
        import mlx_lm

        if args.model == "default":
            from lacy_mlx.defaults import default_model_dir

            args.model = str(default_model_dir())
        model, tokenizer = mlx_lm.load(args.model)
        prompt = TEXT_PROMPT
    else:
        tokenizer = build_tokenizer(tmp, args.vocab)
        model = build_model(args.vocab, args.hidden, args.layers, seed=0)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    t0 = time.perf_counter()
    store = build_store(tmp / "kb.db", args.chunks)
    store_s = time.perf_counter() - t0
    store.search("w1 w2", k=3)  # builds the fast mirror outside the timed runs

    lacy = lacy_mlx.load((model, tokenizer), delegate=lacy_mlx.RetrievalDelegate(store, k=2), max_evidence_tokens=48)
    specials = special_ids(tokenizer)
    prompt_ids = tokenizer.encode(prompt)
    gates = {
        "lacy_off": GateConfig(mode="off"),
        "lacy_gate": GateConfig(mode="either", call_threshold=1.0, entropy_threshold=1e9),
        # Until the budget's window warms up, an unreachable threshold: only the quantile calls.
        "lacy_calls": GateConfig(mode="entropy", entropy_threshold=1e9, budget=args.call_rate, budget_window=64,
                                 budget_warmup=4, min_gap=1),
    }
    print(f"device {mx.default_device()}, {n_params / 1e6:.0f}M params, vocab {args.vocab if not args.model else '?'}, "
          f"OpenBLAS preloaded: {openblas_preloaded()}, store {store.count()['chunks']} chunks ({store_s:.1f} s)",
          file=sys.stderr)
    run_mlx_lm(model, prompt_ids, 4)  # warm-up: kernels, caches
    run_lacy(lacy, 4, gates["lacy_gate"], prompt)
    results: dict[str, list] = {k: [] for k in ["mlx_lm", *gates]}
    names = list(results)
    for r in range(args.repeats):
        # Rotate the order each round: on a shared CPU, whoever runs first in a round is favoured.
        for name in names[r % len(names):] + names[: r % len(names)]:
            if name == "mlx_lm":
                results[name].append({"tps": run_mlx_lm(model, prompt_ids, args.tokens)})
            else:
                results[name].append(run_lacy(lacy, args.tokens, gates[name], prompt))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['tps']:.2f}" for k, v in results.items()), file=sys.stderr)

    med = {k: statistics.median(x["tps"] for x in v) for k, v in results.items()}
    step_s = 1.0 / med["lacy_off"]
    gate_op_s = time_gate_op(int(model(mx.array([[0]])).shape[-1]), specials.call if specials.call is not None else -1)
    calls = results["lacy_calls"]
    paired = paired_step_overhead(model, prompt_ids, specials, args.pairs)
    summary = {
        "benchmark": "decode",
        "device": str(mx.default_device()),
        "params_m": round(n_params / 1e6, 1),
        "tokens": args.tokens,
        "repeats": args.repeats,
        "openblas": openblas_preloaded(),
        "tokens_per_s": {k: round(v, 3) for k, v in med.items()},
        "ratio_vs_mlx_lm": {k: round(v / med["mlx_lm"], 4) for k, v in med.items()},
        "gate_on_vs_off": round(med["lacy_gate"] / med["lacy_off"], 4),
        "paired_step": paired,
        "gate_op_ms": round(gate_op_s * 1e3, 3),
        "gate_op_share_of_step": round(gate_op_s / step_s, 4),
        "gate_host_ms_per_step": round(1e3 * statistics.median(x["gate_s"] / x["steps"] for x in results["lacy_gate"]), 4),
        "host_syncs_per_step": statistics.median(x["syncs"] / x["steps"] for x in results["lacy_gate"]),
        "call_rate": round(statistics.median(x["calls"] / x["steps"] for x in calls), 3),
        "retrieval_ms_per_call": round(1e3 * statistics.median(x["retrieval_s"] / max(x["calls"], 1) for x in calls), 3),
        "inject_ms_per_call": round(1e3 * statistics.median(x["inject_s"] / max(x["calls"], 1) for x in calls), 3),
        "store_chunks": store.count()["chunks"],
    }
    for k in med:
        print(f"{k:>10}: {med[k]:8.2f} tok/s  ({med[k] / med['mlx_lm']:.3f}x mlx-lm)")
    print(f"paired steps: {paired['step_ms']:.1f} ms without the gate, {paired['gated_step_ms']:.1f} ms with it: "
          f"gate overhead {paired['overhead_ms']:.2f} ms = {100 * paired['overhead_share']:.2f}% of a decode step")
    print(f"gate on / off (end to end): {summary['gate_on_vs_off']:.3f}; gate op alone {summary['gate_op_ms']:.2f} ms "
          f"= {100 * summary['gate_op_share_of_step']:.2f}% of a decode step; "
          f"calls: rate {summary['call_rate']:.2f}, retrieval {summary['retrieval_ms_per_call']:.2f} ms/call, "
          f"evidence injection {summary['inject_ms_per_call']:.2f} ms/call (host)")
    print(json.dumps(summary))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
