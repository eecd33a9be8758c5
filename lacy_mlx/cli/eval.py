"""``lacy-mlx eval MODEL``: FactScore-style numbers of a trained model through the runtime and a
sqlite-vec store, alone and with calls (optionally at several call budgets), per group of people."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="score a trained model's biographies alone and with calls (precision, calls, leakage)",
        description="Write a biography of each evaluated person (frequent, seen once, never seen in "
        "training) with the model alone (<CALL> masked) and with calls answered by an evidence store; "
        "check every claim against the ground truth (lacy_mlx.train.metrics defines the metrics).",
    )
    p.add_argument("model", help="a folder written by `lacy-mlx train`")
    p.add_argument("--db", help="evidence store file, filled with the people's passages (default: a temporary one)")
    p.add_argument("--people", type=int, default=20, help="people per group (default 20)")
    p.add_argument("--seed", type=int, help="'never seen' = a fresh knowledge base of new people from this seed "
                   "(default: the run's held-out people)")
    p.add_argument("--budget", type=float, nargs="+", help="call budgets (shares of tokens) to sweep, e.g. "
                   "0.05 0.1 0.2 0.3 (default: the model's own call threshold)")
    p.add_argument("--threshold", type=float, help="p(<CALL>) threshold (default: the model's)")
    p.add_argument("--query", choices=("auto", "latent", "text"), default="auto",
                   help="how a call queries the store (default: the query tower when the model has one)")
    p.add_argument("--k", type=int, help="passages per call (default: the model's)")
    p.add_argument("--max-tokens", type=int, default=80, help="most tokens per biography (default 80)")
    p.add_argument("--distractors", type=int, default=300, help="other training people whose passages the store holds")
    p.add_argument("--frequent-min", type=int, default=10, help="mentions that make a person 'frequent' (default 10)")
    p.add_argument("--copy-probe", type=int, default=0, metavar="N",
                   help="also run the oracle-evidence copy probe on the first N people of each group")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--plot", help="write a PNG of factual precision against call rate (needs matplotlib)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lacy_mlx.train.evaluate import copy_probe_groups, evaluate
    from lacy_mlx.train.plot import plot_precision

    report = evaluate(args.model, db=args.db, per_group=args.people, seed=args.seed,
                      budgets=args.budget or [None], threshold=args.threshold, max_tokens=args.max_tokens,
                      query=args.query, k=args.k, distractors=args.distractors, frequent_min=args.frequent_min)
    summary = report.summary()
    probe = copy_probe_groups(args.model, per_group=args.copy_probe, seed=args.seed,
                              frequent_min=args.frequent_min) if args.copy_probe else None
    if args.plot:
        plot_precision({report.model: summary}, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps({"model": report.model, "metrics": summary, **({"copy_probe": probe} if probe else {})}))
        return 0
    print(report.table())
    for group, r in (probe or {}).items():
        print(f"copy probe, {group}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return 0
