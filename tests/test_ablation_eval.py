"""The ablation command and `lacy-mlx eval`, end to end on the tiny preset (a few training steps).

Four tiny models (plain, loss, rho1 with plain as reference, lacy) are trained from the same
seed, then each is scored through the runtime and a real sqlite-vec store (hashed embedder, as
the tiny preset trains its query tower against) at a call budget, on its training people and on
a fresh knowledge base. What is checked is the plumbing, not the numbers: 6 steps teach nothing.
"""
import json

import pytest

from lacy_mlx.cli import main as cli_main
from lacy_mlx.train.ablation import OBJECTIVES, matched_table, run_ablation, separation_table, sites_table, table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    results = run_ablation(out, preset="tiny", steps=6, log_every=3, save_every=6, progress=False, budgets=(0.2,),
                           per_group=2, eval_seed=5, frequent_min=3, max_tokens=24)
    return out, results


def test_ablation_trains_four_objectives_and_scores_each_on_both_knowledge_bases(ablation):
    out, results = ablation
    assert set(results) == set(OBJECTIVES)
    assert json.loads((out / "ablation.json").read_text()) == results
    cfg = json.loads((out / "rho1" / "training_config.json").read_text())
    assert cfg["objective"] == "rho1" and cfg["reference_model"] == str(out / "plain")
    for objective, summary in results.items():
        assert set(summary) == {"alone", "budget=0.2"}
        # training people (frequent, seen once), the fresh knowledge base (never seen), and all pooled
        assert set(summary["alone"]) == {"frequent", "seen once", "never seen", "all"}
        for group, m in summary["alone"].items():
            assert m["people"] == (6 if group == "all" else 2) and m["calls"] == 0 and m["tokens"] > 0
        assert all(m["calls"] <= m["tokens"] for m in summary["budget=0.2"].values())
        sites = json.loads((out / objective / "call_sites.json").read_text())
        assert sites["budget=0.2"]["all"]["calls"] == summary["budget=0.2"]["all"]["calls"]
    assert "lacy" in table(results) and "@0.2" in matched_table(results, (0.2,))
    assert "budget=0.2" in sites_table(out)
    separation = separation_table(out, per_group=2, eval_seed=5, frequent_min=3).splitlines()
    assert len(separation) == 1 + 4 * 4  # a row per model and group (three and pooled)
    # Models already trained are reused: a second run trains nothing and scores the same.
    again = run_ablation(out, preset="tiny", steps=6, progress=False, budgets=(0.2,), per_group=2, eval_seed=5,
                         frequent_min=3, max_tokens=24, objectives=("lacy",))
    strip = lambda s: {k: {g: {n: v for n, v in m.items() if n != "tokens_per_s"} for g, m in by.items()}
                       for k, by in s.items()}
    assert strip(again["lacy"]) == strip(results["lacy"])


def test_measured_call_rate_lands_near_the_budget(ablation):
    """The budget of a setting is shared by its biographies and matches calls, not passing scores:
    the pooled measured rate (calls per generated token) lands near it."""
    from lacy_mlx.train.evaluate import evaluate

    out, _ = ablation
    report = evaluate(out / "lacy", per_group=3, seed=5, budgets=(0.05,), frequent_min=3, max_tokens=48)
    pooled = report.summary()["budget=0.05"]["all"]
    rate = pooled["call_rate"]
    # A few hundred tokens: 3 binomial standard deviations of the call count (~0.03 here); the budget's
    # control itself is tested on long synthetic streams in test_runtime_policy.py.
    tokens = pooled["calls"] / rate
    assert abs(rate - 0.05) < 3 * (0.05 * 0.95 / tokens) ** 0.5, (rate, tokens)


def test_matched_table_interpolates_along_the_measured_rates():
    from lacy_mlx.train.metrics import at_rate

    assert at_rate([(0.0, 0.2), (0.1, 0.6)], 0.05) == pytest.approx(0.4)
    assert at_rate([(0.0, 0.2), (0.1, 0.6)], 0.2) is None  # no extrapolation past the sweep
    row = lambda p, rate: {"factual_precision": p, "call_rate": rate}
    results = {"m": {"alone": {"g": row(0.2, 0.0), "all": row(0.2, 0.0)},
                     "budget=0.1": {"g": row(0.6, 0.3), "all": row(0.5, 0.1)}}}
    text = matched_table(results, (0.05, 0.2))
    assert "0.400" in text.splitlines()[2] and text.splitlines()[2].split()[-1] == "-"


def test_eval_command_end_to_end(ablation, tmp_path, capsys):
    out, _ = ablation
    db = tmp_path / "evidence.db"
    args = [str(out / "lacy"), "--db", str(db), "--people", "2", "--seed", "5", "--budget", "0.1", "0.3",
            "--frequent-min", "3", "--max-tokens", "24"]
    assert cli_main(["eval", *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["metrics"]) == {"alone", "budget=0.1", "budget=0.3"}
    assert set(report["metrics"]["alone"]) == {"frequent", "seen once", "never seen", "all"}
    assert db.is_file()  # the store is kept where --db says, with the fresh people's passages in it
    assert cli_main(["eval", *args, "--copy-probe", "1"]) == 0
    text = capsys.readouterr().out
    assert "never seen" in text and "copy probe, seen once: probes 7, acc_alone" in text
    assert cli_main(["eval", str(tmp_path), "--people", "1"]) == 1  # not a trained folder: one clear error
    assert "lacy-mlx train" in capsys.readouterr().err
    assert cli_main(["eval", str(out / "lacy"), "--seed", "1"]) == 1  # the training seed: ids would collide
    assert "pick another one" in capsys.readouterr().err


def test_eval_plot(ablation, tmp_path):
    pytest.importorskip("matplotlib")
    out, results = ablation
    from lacy_mlx.train.plot import plot_precision

    png = plot_precision(results, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
