"""Gate settings and the running-quantile call budget (host side, no model)."""
import numpy as np
import pytest

from lacy_mlx.errors import InputError
from lacy_mlx.gate import MODES
from lacy_mlx.runtime.policy import CallBudget, GateConfig, GatePolicy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "sometimes"},
        {"call_threshold": 1.5},
        {"entropy_threshold": -1.0},
        {"budget": 0.0},
        {"budget": 1.0},
        {"budget_window": 2},
        {"min_gap": -1},
        {"max_calls": -3},
        {"per_sentence": 0},
    ],
)
def test_bad_gate_settings_raise_input_error(kwargs):
    with pytest.raises(InputError):
        GateConfig(**kwargs)


def test_with_ignores_none_and_validates():
    cfg = GateConfig(mode="call", call_threshold=0.3)
    assert cfg.with_(call_threshold=None, mode="entropy") == GateConfig(mode="entropy", call_threshold=0.3)
    with pytest.raises(InputError):
        cfg.with_(mode="bogus")


def test_from_section_ignores_unknown_keys():
    cfg = GateConfig.from_section({"mode": "either", "call_threshold": 0.2, "colour": "red"}, mode="call")
    assert cfg.mode == "either" and cfg.call_threshold == 0.2


@pytest.mark.parametrize("share", [0.05, 0.22, 0.5])
@pytest.mark.parametrize("dist", ["beta", "bimodal"])
def test_budget_reaches_target_share(share, dist):
    """Deciding each step with the threshold from the steps before it calls about `share` of them."""
    rng = np.random.default_rng(7)
    n = 6000
    if dist == "beta":
        scores = rng.beta(0.5, 3.0, n)
    else:  # many exact zeros (a model that rarely calls) plus a spread of high scores
        scores = np.where(rng.random(n) < 0.6, 0.0, rng.random(n))
        scores = np.where(scores > 0, scores, 0.0)
    budget = CallBudget(share, window=256, warmup=16)
    calls = 0
    for s in scores:
        thr = budget.threshold()
        if thr is not None and s >= thr and s > 0:
            calls += 1
        budget.observe(float(s))
    rate = calls / n
    target = min(share, float(np.mean(scores > 0)))  # zeros never call
    assert abs(rate - target) < 0.25 * target + 0.01, (rate, target)


def test_budget_tracks_a_drifting_distribution():
    """After the score distribution shifts, the window forgets the old one."""
    rng = np.random.default_rng(3)
    budget = CallBudget(0.2, window=128, warmup=16)
    for s in rng.random(2000) * 0.1:
        budget.observe(float(s))
    low = budget.threshold()
    for s in 0.9 + rng.random(2000) * 0.1:
        budget.observe(float(s))
    assert low < 0.1 and budget.threshold() > 0.9


def test_budget_treats_nan_as_lowest_score():
    budget = CallBudget(0.5, window=8, warmup=1)
    for s in [float("nan"), 0.7, float("nan"), 0.9]:
        budget.observe(s)
    assert budget.threshold() in (0.7, 0.9)


def test_policy_cooldown_closes_exactly_min_gap_steps():
    policy = GatePolicy(GateConfig(mode="entropy", entropy_threshold=0.0, min_gap=2), has_call_token=False)
    assert policy.next_params().tolist()[0] == MODES["entropy"]
    policy.after_call()
    modes = [policy.next_params().tolist()[0] for _ in range(4)]
    assert modes == [0, 0, MODES["entropy"], MODES["entropy"]]


def test_policy_max_calls_and_sentence_hold():
    policy = GatePolicy(GateConfig(mode="call", max_calls=1, min_gap=1), has_call_token=True)
    policy.after_call()
    policy.next_params()
    assert not policy.open  # the cap is reached
    policy = GatePolicy(GateConfig(mode="call"), has_call_token=True)
    policy.hold_until_sentence_end()
    assert policy.next_params().tolist()[0] == 0
    policy.sentence_ended()
    assert policy.next_params().tolist()[0] == MODES["call"]


def test_policy_per_sentence_limit():
    policy = GatePolicy(GateConfig(mode="call", per_sentence=2, min_gap=1), has_call_token=True)
    for _ in range(2):
        assert policy.open
        policy.after_call()
        policy.next_params()  # the one-step cool-down passes
    assert not policy.open  # two calls in this sentence: closed until it ends
    policy.next_params()
    assert not policy.open
    policy.sentence_ended()
    assert policy.open


def test_policy_budget_moves_the_params_threshold():
    policy = GatePolicy(GateConfig(mode="call", budget=0.25, budget_warmup=8), has_call_token=True)
    for i in range(100):
        policy.after_step(entropy=1.0, p_call=(i % 4) / 4)  # 0, .25, .5, .75 repeating
    _, ent_t, call_t = policy.next_params().tolist()
    assert call_t == pytest.approx(0.75)
    assert policy.reason(1.0, 0.8, policy.last_thresholds) == "call"


def test_skip_first_keeps_the_gate_closed_at_the_start():
    from lacy_mlx.runtime.policy import GatePolicy

    policy = GatePolicy(GateConfig(mode="entropy", entropy_threshold=0.0, skip_first=2), has_call_token=False)
    modes = [float(policy.next_params()[0]) for _ in range(4)]
    assert modes[:2] == [0.0, 0.0] and modes[2] > 0 and modes[3] > 0
    with pytest.raises(InputError, match="skip_first"):
        GateConfig(skip_first=-1)


def _calls_under_caps(budget, scores, sentence=8):
    """Steps that call under one call per `sentence`-step sentence and a one-step cool-down."""
    calls, used, cool = 0, False, 0
    for i, s in enumerate(scores):
        if i % sentence == 0:
            used = False
        thr = budget.threshold()
        fire = thr is not None and s >= thr and not used and cool == 0
        cool = max(0, cool - 1)
        budget.observe(float(s))
        if fire:
            budget.called()
            calls, used, cool = calls + 1, True, 1
    return calls / len(scores)


@pytest.mark.parametrize("share", [0.03, 0.06, 0.1])
def test_budget_matching_calls_reaches_the_share_despite_caps_and_bursts(share):
    """Bursty scores under a per-sentence cap: the plain quantile misses the share of steps that
    call; with match_calls (the integral correction) the measured share lands near it."""
    rng = np.random.default_rng(11)
    n = 8000
    burst = np.repeat(rng.random(n // 40) < 0.3, 40)[:n]  # stretches of high scores, as after a call
    scores = np.where(burst, 0.6 + 0.05 * rng.random(n), rng.beta(0.5, 3.0, n))
    plain = _calls_under_caps(CallBudget(share, window=1024), scores)
    matched = _calls_under_caps(CallBudget(share, window=1024, match_calls=True), scores)
    assert abs(matched - share) < 0.05 * share, (matched, share)
    assert abs(plain - share) > 2 * abs(matched - share), (plain, matched, share)


def test_budget_matching_calls_saturates_where_the_caps_allow_fewer_calls():
    """A share above what one call per sentence allows: the level rises to its bound and stays
    bounded (no wind-up), and the gate calls in every sentence."""
    budget = CallBudget(0.5, window=64, match_calls=True)
    rate = _calls_under_caps(budget, np.random.default_rng(2).random(4000), sentence=8)
    assert rate == pytest.approx(1 / 8, abs=0.01)
    assert budget.level() == CallBudget.MAX_LEVEL


def test_a_shared_budget_keeps_its_state_across_generations():
    """GateConfig(budget=CallBudget) is used as is: a second policy starts where the first ended."""
    shared = CallBudget(0.25, window=64, warmup=8)
    first = GatePolicy(GateConfig(mode="call", budget=shared), has_call_token=True)
    for i in range(40):
        first.after_step(entropy=1.0, p_call=(i % 4) / 4)
    second = GatePolicy(GateConfig(mode="call", budget=shared), has_call_token=True)
    assert second.budget is shared and second.thresholds()[1] == pytest.approx(0.75)  # no warm-up again
    second.after_call()
    assert "CallBudget(0.25)" in repr(GateConfig(budget=shared))
