"""``lacy-mlx qa --questions FILE [--db FILE]``: answer a question set alone, with retrieval
before every answer, and gated; print accuracy and calls per answer for each."""
from __future__ import annotations

import argparse
import json
import sys

from lacy_mlx.cli.runtime_options import add_gate_options, add_model_options, build_lacy, gate_changes
from lacy_mlx.cli.terminal import inert


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qa", help="score a question set through the runtime (alone / retrieval first / gated)",
        description="Answer every question of a JSONL set (id, question, answer, aliases, doc; see "
        "lacy_mlx.qa) with the model alone, with retrieval before every answer, and with the gate "
        "deciding; scored by exact answer match.",
    )
    add_model_options(p)
    add_gate_options(p)
    p.add_argument("--questions", required=True, help="question set (JSONL), e.g. examples/questions.jsonl")
    p.add_argument("--modes", default="alone,first,gate", help="comma-separated: alone, first, gate (default all)")
    p.add_argument("--sweep", help="gate mode: comma-separated entropy thresholds to run in turn, e.g. 2,2.5,3")
    p.add_argument("--max-tokens", type=int, default=48, help="most tokens per answer (default 48)")
    p.add_argument("--sentences", type=int, default=1, help="answers end after this many sentences (default 1)")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--json", action="store_true", help="print the summaries (and answers) as JSON")
    p.add_argument("--show", action="store_true", help="print every answer as it is scored")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lacy_mlx.qa import load_questions
    from lacy_mlx.qa_run import answer_questions, table

    questions = load_questions(args.questions)[: args.limit]
    lacy = build_lacy(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    gates = [lacy.gate]
    if args.sweep:
        gates = [lacy.gate.with_(mode="entropy", entropy_threshold=float(v), budget=None) for v in args.sweep.split(",")]
    show = (lambda a: print(f"  [{'ok' if a.correct else '--'}] {a.question.id} calls={a.calls} "
                            f"{inert(' '.join(a.text.split())[:100])}", file=sys.stderr, flush=True)) if args.show else None
    reports = []
    for mode in modes:
        for gate in gates if mode == "gate" else [None]:
            reports.append(answer_questions(lacy, questions, mode=mode, max_tokens=args.max_tokens, gate=gate,
                                            max_sentences=args.sentences,
                                            progress=show))
            s = reports[-1].summary()
            print(f"{mode}: accuracy {s['accuracy']:.3f}, {s['calls_per_answer']:.2f} calls per answer",
                  file=sys.stderr, flush=True)
    summaries = [r.summary() for r in reports]
    if args.json:
        print(json.dumps({"model": lacy.name, "gate_changes": {k: v for k, v in gate_changes(args).items() if v is not None},
                          "summaries": summaries}))
    else:
        print(table(summaries))
    return 0
