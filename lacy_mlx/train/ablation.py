"""The LaCy ablation: four objectives trained alike, each evaluated through the cascade at
matched call rates.

``plain`` is trained first (it is the Rho-1 reference and, with the entropy gate at inference,
the baseline that was never taught <CALL>); then ``loss``, ``rho1`` and ``lacy`` from the same
preset, seed, data, size and steps. Each model is scored by :func:`lacy_mlx.train.evaluate.evaluate`
at every call budget of the sweep (the runtime's running-quantile budget, so call rates match),
on the run's own people and on a fresh knowledge base (``eval_seed``: people never seen, their
passages ingested into a new store at evaluation time).

``python -m lacy_mlx.train.ablation OUT [--preset ablation] [--steps N] [--budget 0.05 0.1 ...]
[--people N] [--plot FILE]`` runs it all; models already trained in ``OUT/<objective>`` are reused.
``--report`` prints the tables of an earlier run's ``OUT/ablation.json`` without running anything.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lacy_mlx.train.config import preset as make_preset

OBJECTIVES = ("plain", "loss", "rho1", "lacy")  # plain first: rho1 reads it as its reference
# Calls per token; one call per sentence caps the rate near 0.14 on these biographies (7-9
# sentences in 48-61 tokens), so the sweep stays below it.
BUDGETS = (0.03, 0.06, 0.09, 0.12)
FREQUENT_MIN = 5  # the ablation corpus has 20 people with >= 5 mentions, 8 with >= 10


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
            _share_passage_embeddings([out / o for o in OBJECTIVES if o != objective], folder)
            train(make_preset(preset, objective=objective, **extra, **overrides), folder)
        folders[objective] = folder
    return folders


def _share_passage_embeddings(others: list[Path], folder: Path) -> None:
    """Copy another run's passage embeddings into ``folder``: the runs differ only in their
    objective, so the corpus and embedder are the same and prepare() reuses the file instead of
    embedding every passage again (about a minute of CPU per run)."""
    for src in others:
        files = [src / "data" / n for n in ("passages.npy", "passages.json")]
        if all(f.is_file() for f in files) and not (folder / "data" / "passages.npy").exists():
            (folder / "data").mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copyfile(f, folder / "data" / f.name)
            return


def run_ablation(out: str | Path, *, preset: str = "ablation", budgets: Sequence[float] = BUDGETS,
                 per_group: int = 20, eval_seed: int = 7, frequent_min: int = FREQUENT_MIN, max_tokens: int = 80,
                 objectives: Sequence[str] = OBJECTIVES, query: str = "text", **overrides: Any) -> dict[str, dict]:
    """Train (or reuse) every objective and evaluate it; ``{objective: EvalReport.summary()}``, also
    written to ``out/ablation.json`` (and each model's call sites, :func:`~lacy_mlx.train.metrics.call_sites`,
    to ``out/<objective>/call_sites.json``, its biographies to ``out/<objective>/biographies.json``).

    The groups: ``frequent`` and ``seen once`` are training people; ``never seen`` is a fresh
    knowledge base (``eval_seed``: new people, their passages ingested at evaluation time). One
    budget per setting spans all three, so a model spends its calls where it chooses.
    ``query``: how calls query the store (:func:`~lacy_mlx.train.evaluate.evaluate`); ``text``
    (default: name plus sentence through the store's embedder) gives every objective the same
    retrieval, so that only where it calls differs. ``overrides`` go to the preset.
    """
    from lacy_mlx.train.evaluate import evaluate
    from lacy_mlx.train.metrics import call_sites

    folders = train_objectives(out, preset=preset, objectives=objectives, **overrides)
    results: dict[str, dict] = {}
    for objective, folder in folders.items():
        mode = "entropy" if objective == "plain" else None  # plain never learned <CALL>: the entropy gate
        report = evaluate(folder, per_group=per_group, seed=eval_seed, budgets=budgets, gate_mode=mode,
                          frequent_min=frequent_min, max_tokens=max_tokens, query=query)
        results[objective] = report.summary()
        sites = {setting: {g: call_sites(bios) for g, bios in {**by_group, "all": sum(by_group.values(), [])}.items()}
                 for setting, by_group in report.runs.items() if setting != "alone"}
        Path(folder, "call_sites.json").write_text(json.dumps(sites, indent=1) + "\n", encoding="utf-8")
        bios = {setting: {g: [asdict(b) for b in bs] for g, bs in by_group.items()}
                for setting, by_group in report.runs.items()}
        Path(folder, "biographies.json").write_text(json.dumps(bios) + "\n", encoding="utf-8")
    Path(out, "ablation.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


_COLS = ("factual_precision", "call_rate", "call_precision", "call_recall", "leakage")


def _cell(v: float | None, width: int = 9) -> str:
    return f"{'-' if v is None else format(v, '.3f'):>{width}}"


def table(results: dict[str, dict]) -> str:
    """One row per model, setting and group: true/claims, precision, measured call rate, call
    precision/recall, leakage (group ``all`` pools the groups: its rate is what the budget matches)."""
    lines = [f"{'model':<8} {'setting':<12} {'group':<11} {'true/claims':>11} {'precision':>9} {'calls/tok':>9} "
             f"{'call prec':>9} {'call rec':>9} {'leakage':>9}"]
    for model, summary in results.items():
        for setting, by_group in summary.items():
            for group, m in by_group.items():
                claims = f"{m['true_claims']}/{m['claims']}"
                lines.append(f"{model:<8} {setting:<12} {group:<11} {claims:>11} "
                             + " ".join(_cell(m[c]) for c in _COLS))
    return "\n".join(lines)


def matched_table(results: dict[str, dict], rates: Sequence[float] = BUDGETS, metric: str = "factual_precision") -> str:
    """``metric`` per model and group at each of ``rates``, interpolated along the model's sweep by
    the measured pooled call rate (:func:`lacy_mlx.train.metrics.at_rate`); '-' outside the sweep."""
    from lacy_mlx.train.metrics import at_rate

    lines = [f"{metric} at matched call rate (pooled calls per token)",
             f"{'model':<8} {'group':<11} " + " ".join(f"{'@' + format(r, 'g'):>9}" for r in rates)]
    for model, summary in results.items():
        groups = [g for g in next(iter(summary.values()))]
        for group in groups:
            points = [(by_group["all"]["call_rate"] or 0.0, by_group[group][metric]) for by_group in summary.values()]
            lines.append(f"{model:<8} {group:<11} " + " ".join(_cell(at_rate(points, r)) for r in rates))
    return "\n".join(lines)


def sites_table(out: str | Path, objectives: Sequence[str] = OBJECTIVES) -> str:
    """Where each model calls (``out/<objective>/call_sites.json``, pooled over the groups): share
    of calls at a value, at a sentence's first word, the mean sentence index, and call precision
    among the calls at a value; per setting of the sweep."""
    lines = [f"{'model':<8} {'setting':<13} {'group':<11} {'calls':>6} {'at value':>9} {'1st word':>9} "
             f"{'sentence':>9} {'needed@v':>9}"]
    for objective in objectives:
        path = Path(out, objective, "call_sites.json")
        if not path.is_file():
            continue
        for setting, by_group in json.loads(path.read_text(encoding="utf-8")).items():
            for group, m in by_group.items():
                lines.append(f"{objective:<8} {setting:<13} {group:<11} {m['calls']:>6} " + " ".join(
                    _cell(m[k]) for k in ("at_value", "first_word", "mean_sentence", "needed_at_value")))
    return "\n".join(lines)


def separation_table(out: str | Path, objectives: Sequence[str] = OBJECTIVES, *, per_group: int = 20,
                     eval_seed: int = 7, frequent_min: int = FREQUENT_MIN) -> str:
    """How each model's gate score, alone, separates the value tokens it gets wrong (``unknown``)
    from those it gets right (``known``) and from other tokens (:func:`~lacy_mlx.train.metrics.auc`
    of p(<CALL>), or entropy for ``plain``), per group; from ``out/<objective>/biographies.json``."""
    from lacy_mlx.train.evaluate import eval_people
    from lacy_mlx.train.metrics import Biography, auc, score_separation

    lines = [f"{'model':<8} {'group':<11} {'unknown':>8} {'known':>7} {'other':>7} {'unk>known':>10} {'unk>other':>10}"]
    for objective in objectives:
        path = Path(out, objective, "biographies.json")
        if not path.is_file():
            continue
        alone = json.loads(path.read_text(encoding="utf-8"))["alone"]
        chosen = eval_people(Path(out, objective), per_group=per_group, seed=eval_seed, frequent_min=frequent_min,
                             distractors=0)
        people = {p.pid: p for ps in chosen.groups.values() for p in ps}
        col = 2 if objective == "plain" else 1  # the score the model's gate reads
        pooled: list = []
        for group, bios in [*alone.items(), ("all", None)]:
            rows = pooled if bios is None else [
                r for b in bios for r in score_separation(people[b["pid"]], Biography(b["pid"], b["text"], [],
                                                                                        scores=b["scores"]))]
            if bios is not None:
                pooled += rows
            by = {k: [r[col] for r in rows if r[0] == k] for k in ("unknown", "known", "other")}
            lines.append(f"{objective:<8} {group:<11} {len(by['unknown']):>8} {len(by['known']):>7} "
                         f"{len(by['other']):>7} " + _cell(auc(by["unknown"], by["known"]), 10)
                         + " " + _cell(auc(by["unknown"], by["other"]), 10))
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
    ap.add_argument("--frequent-min", type=int, default=FREQUENT_MIN,
                    help=f"mentions that make a person 'frequent' (default {FREQUENT_MIN})")
    ap.add_argument("--query", choices=("text", "latent", "auto"), default="text",
                    help="how calls query the store (default text: the same retrieval for every objective)")
    ap.add_argument("--objectives", nargs="+", choices=OBJECTIVES,
                    help="train/evaluate only these (their results replace theirs in an existing ablation.json)")
    ap.add_argument("--report", action="store_true", help="only print the tables of OUT/ablation.json")
    ap.add_argument("--plot", help="PNG of factual precision against call rate (needs matplotlib)")
    a = ap.parse_args(argv)
    saved = Path(a.out, "ablation.json")
    if a.report:
        if not saved.is_file():
            raise SystemExit(f"{saved} does not exist: run the ablation first")
        results = json.loads(saved.read_text(encoding="utf-8"))
    else:
        overrides = {"steps": a.steps} if a.steps else {}
        earlier = json.loads(saved.read_text(encoding="utf-8")) if a.objectives and saved.is_file() else {}
        results = run_ablation(a.out, preset=a.preset, budgets=a.budget, per_group=a.people, eval_seed=a.seed,
                               frequent_min=a.frequent_min, objectives=a.objectives or OBJECTIVES, query=a.query,
                               **overrides)
        if earlier:
            results = {o: results.get(o, earlier.get(o)) for o in OBJECTIVES if o in results or o in earlier}
            saved.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(table(results))
    print()
    print(matched_table(results, a.budget))
    print()
    print(matched_table(results, a.budget, "leakage"))
    print()
    print(sites_table(a.out, [o for o in OBJECTIVES if o in results]))
    print()
    print(separation_table(a.out, [o for o in OBJECTIVES if o in results], per_group=a.people, eval_seed=a.seed,
                           frequent_min=a.frequent_min))
    if a.plot:
        from lacy_mlx.train.plot import plot_precision

        plot_precision(results, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
