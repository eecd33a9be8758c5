"""Factual precision against call rate, one line per model (matplotlib, an optional extra)."""
from __future__ import annotations

from pathlib import Path

from lacy_mlx.errors import InputError


def plot_precision(summaries: dict[str, dict[str, dict[str, dict]]], path: str | Path) -> Path:
    """Write a PNG: per group a panel, per model (``{model: EvalReport.summary()}``) a line through
    its settings' (call rate, factual precision) points; the ``alone`` setting sits at call rate 0."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("--plot needs matplotlib: pip install 'lacy-mlx[plot]'") from exc
    groups = sorted({g for s in summaries.values() for by_group in s.values() for g in by_group})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for model, summary in summaries.items():
            pts = sorted((m[group]["call_rate"] or 0.0, m[group]["factual_precision"] or 0.0)
                         for m in summary.values() if group in m)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=model)
        ax.set(title=group, xlabel="calls per generated token", ylabel="factual precision", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
