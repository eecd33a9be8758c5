"""The LaCy ablation: four objectives trained alike, each evaluated through the cascade at
matched call rates.

``plain`` is trained first (it is the Rho-1 reference and, with the entropy gate at inference,
the baseline that was never taught <CALL>); then ``loss``, ``rho1`` and ``lacy`` from the same
preset, seed, data, size and steps. Each model is scored by :func:`lacy_mlx.train.evaluate.evaluate`
at every call budget of the sweep (the runtime's running-quantile budget, so call rates match),
on the run's own people and on a fresh knowledge base (``eval_seed``: people never seen, their
passages ingested into a new store at evaluation time).

``python -m lacy_mlx.train.ablation OUT [--preset ablation] [--steps N] [--budget 0.05 0.1 ...]
[--plot FILE]`` runs it all; models already trained in ``OUT/<objective>`` are reused.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lacy_mlx.train.config import preset as make_preset

OBJECTIVES = ("plain", "loss", "rho1", "lacy")  # plain first: rho1 reads it as its reference
BUDGETS = (0.05, 0.1, 0.2, 0.3)


def train_objectives(out: str | Path, *, preset: str = "ablation", objectives: Sequence[str] = OBJECTIVES,
                     **overrides: Any) -> dict[str, Path]:
    """Train each objective into ``out/<objective>`` (skipped when its config.json exists)."""
    from lacy_mlx.train.trainer import train

    out = Path(out)
    folders: dict[str, Path] = {}
    for objective in objectives:
        folder = out / objective
        if not (folder / "config.json").is_file():
            extra = {"reference_model": str(out / "plain")} if objective == "rho1" else {}
            _share_passage_embeddings(list(folders.values()), folder)
            train(make_preset(preset, objective=objective, **extra, **overrides), folder)
        folders[objective] = folder
    return folders


def _share_passage_embeddings(done: list[Path], folder: Path) -> None:
    """Copy an earlier run's passage embeddings into ``folder``: the runs differ only in their
    objective, so the corpus and embedder are the same and prepare() reuses the file instead of
    embedding every passage again (about a minute of CPU per run)."""
    for src in done:
        files = [src / "data" / n for n in ("passages.npy", "passages.json")]
        if all(f.is_file() for f in files) and not (folder / "data" / "passages.npy").exists():
            (folder / "data").mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copyfile(f, folder / "data" / f.name)
            return


def run_ablation(out: str | Path, *, preset: str = "ablation", budgets: Sequence[float] = BUDGETS,
                 per_group: int = 20, eval_seed: int = 7, frequent_min: int = 10, max_tokens: int = 80,
                 objectives: Sequence[str] = OBJECTIVES, **overrides: Any) -> dict[str, dict]:
    """Train (or reuse) every objective and evaluate it; ``{"<objective>" | "<objective>@fresh":
    EvalReport.summary()}``, also written to ``out/ablation.json``. ``overrides`` go to the preset."""
    from lacy_mlx.train.evaluate import evaluate

    folders = train_objectives(out, preset=preset, objectives=objectives, **overrides)
    results: dict[str, dict] = {}
    for objective, folder in folders.items():
        mode = "entropy" if objective == "plain" else None  # plain never learned <CALL>: the entropy gate
        for label, seed in ((objective, None), (f"{objective}@fresh", eval_seed)):
            report = evaluate(folder, per_group=per_group, seed=seed, budgets=budgets, gate_mode=mode,
                              frequent_min=frequent_min, max_tokens=max_tokens)
            results[label] = report.summary()
    Path(out, "ablation.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


def table(results: dict[str, dict]) -> str:
    """One row per model, setting and group: precision, call rate, call precision/recall, leakage."""
    lines = [f"{'model':<14} {'setting':<12} {'group':<11} {'precision':>9} {'calls/tok':>9} {'call prec':>9} "
             f"{'call rec':>9} {'leakage':>9}"]
    for model, summary in results.items():
        for setting, by_group in summary.items():
            for group, m in by_group.items():
                cells = " ".join(f"{'-' if m[c] is None else format(m[c], '.3f'):>9}" for c in
                                 ("factual_precision", "call_rate", "call_precision", "call_recall", "leakage"))
                lines.append(f"{model:<14} {setting:<12} {group:<11} {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m lacy_mlx.train.ablation OUT``: train the four objectives and evaluate them."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for the four models and ablation.json")
    ap.add_argument("--preset", default="ablation", help="training preset (default: ablation)")
    ap.add_argument("--steps", type=int, help="override the preset's steps")
    ap.add_argument("--budget", type=float, nargs="+", default=list(BUDGETS), help="call budgets to sweep")
    ap.add_argument("--people", type=int, default=20, help="people per group")
    ap.add_argument("--seed", type=int, default=7, help="seed of the fresh knowledge base")
    ap.add_argument("--frequent-min", type=int, default=10, help="mentions that make a person 'frequent'")
    ap.add_argument("--plot", help="PNG of factual precision against call rate (needs matplotlib)")
    a = ap.parse_args(argv)
    overrides = {"steps": a.steps} if a.steps else {}
    results = run_ablation(a.out, preset=a.preset, budgets=a.budget, per_group=a.people, eval_seed=a.seed,
                           frequent_min=a.frequent_min, **overrides)
    print(table(results))
    if a.plot:
        from lacy_mlx.train.plot import plot_precision

        plot_precision(results, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
