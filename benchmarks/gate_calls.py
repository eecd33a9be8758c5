"""Where the entropy gate calls on a real chat model: factual questions against turns that need no facts.

Retrieval before every answer costs one retrieval and a longer prefill on every turn; the gate
only pays where the model is unsure. This runs the default model (or ``--model``) with its
gate over the bundled questions (``--questions``) and over built-in turns that need no
retrieval (arithmetic, rewriting, small talk), and prints the share of answers with a call and
calls per answer for each group, with seconds per answer. One JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import lacy_mlx
from lacy_mlx.qa import load_questions

NO_FACTS = [
    "Say hello to me.", "What is 2 plus 2?", "Write one sentence about the sea.", "Thank you!",
    "Translate 'good morning' into French.", "Give me a synonym for happy.", "What colour do you get by mixing blue and yellow?",
    "Rewrite this more politely: give me the book.", "How many legs does a cat have?", "Count from one to five.",
    "Is water wet?", "Tell me a short joke.", "What is the opposite of cold?", "Name a fruit that is yellow.",
    "Spell the word cat backwards.", "What day comes after Monday?", "Write a rhyme with the word moon.",
    "How are you today?", "Summarise in three words: the cat sat on the mat.", "What is ten minus three?",
]


def run(lacy, prompts: list[str], sentences: int) -> dict:
    calls, seconds = [], []
    for text in prompts:
        t0 = time.perf_counter()
        res = lacy.generate([{"role": "user", "content": text}], max_tokens=48, max_sentences=sentences)
        seconds.append(time.perf_counter() - t0)
        calls.append(len(res.calls))
    return {"n": len(prompts), "answers_with_calls": sum(c > 0 for c in calls) / len(prompts),
            "calls_per_answer": sum(calls) / len(prompts), "seconds_per_answer": statistics.median(seconds)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model folder (default: the embedded SmolLM2)")
    p.add_argument("--db", required=True, help="the store to retrieve from")
    p.add_argument("--questions", default="examples/questions.jsonl")
    p.add_argument("--sentences", type=int, default=1)
    p.add_argument("--skip-first", type=int, help="override the gate's skip_first")
    args = p.parse_args(argv)
    lacy = lacy_mlx.load(args.model, db=args.db)
    if args.skip_first is not None:
        lacy.gate = lacy.gate.with_(skip_first=args.skip_first)
    groups = {"no facts needed": NO_FACTS}
    if args.questions:
        groups = {"factual questions": [q.question for q in load_questions(args.questions)], **groups}
    out = {name: run(lacy, prompts, args.sentences) for name, prompts in groups.items()}
    print(f"gate {lacy.gate.mode}, entropy threshold {lacy.gate.entropy_threshold}, per sentence "
          f"{lacy.gate.per_sentence}, skip first {lacy.gate.skip_first}")
    print("| prompts | n | answers with a call | calls per answer | s per answer |\n|---|---|---|---|---|")
    for name, r in out.items():
        print(f"| {name} | {r['n']} | {r['answers_with_calls']:.2f} | {r['calls_per_answer']:.2f} | {r['seconds_per_answer']:.1f} |")
    print(json.dumps({"benchmark": "gate_calls", "model": lacy.name, "groups": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
