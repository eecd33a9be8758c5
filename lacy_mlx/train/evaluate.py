"""FactScore-style evaluation of a trained model through the runtime and the real store.

For each person the model writes a biography from their name, greedily, with
:meth:`lacy_mlx.Lacy.stream`:

- *alone*: the gate on (so <CALL> is masked, as LaCy measures the SLM) but no call allowed;
- *cascade*: at most one call per sentence, answered by a retrieval delegate over a sqlite-vec
  :class:`~lacy_mlx.store.Store` holding the people's evidence passages (plus distractors), the
  evidence injected inline; optionally under a call ``budget``: the runtime's running quantile,
  one :class:`~lacy_mlx.runtime.policy.CallBudget` per setting carried across all its biographies
  (people of the groups interleaved) and aiming at the share of tokens that *call*
  (``match_calls``), so that models are compared at measured call rates near the budget.

Every call carries the runtime's ``Call.alone`` probe, from which :mod:`lacy_mlx.train.metrics`
judges it. People come in three groups: ``frequent`` (seen often in training), ``seen once`` and
``never seen`` (the run's held-out people, or with ``seed`` a fresh knowledge base: new people
whose passages go into the store at evaluation time).
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lacy_mlx.errors import InputError
from lacy_mlx.train.corpus import Person, evidence_records, load_people, make_people
from lacy_mlx.train.metrics import Biography, check_claims, judge_call, summarize

GROUPS = ("frequent", "seen once", "never seen")
ALL = "all"  # the pooled pseudo-group of EvalReport.summary()
PROBE_TOKENS = 10  # tokens of the model-alone continuation judged at each call
# Steps the evaluation's running quantile spans (about 12 biographies): the score distribution of
# one setting is stationary, so a long window only makes the threshold steadier.
BUDGET_WINDOW = 1024


@dataclass
class EvalPeople:
    """The people scored, by group, and the evidence records the store holds for them."""

    groups: dict[str, list[Person]]
    records: list[dict]


def eval_people(model_dir: str | Path, *, per_group: int = 20, seed: int | None = None, frequent_min: int = 10,
                distractors: int = 300, groups: Sequence[str] = GROUPS) -> EvalPeople:
    """The first ``per_group`` people of each group, and the passages of them plus of the first
    ``distractors`` training people (who compete in retrieval).

    ``frequent``: training people with >= ``frequent_min`` mentions; ``seen once``: 1 mention;
    ``never seen``: the run's ``heldout.json``, or with ``seed`` ``per_group`` new people drawn
    with that seed (names distinct from the training people's), their passages made now.
    """
    data = Path(model_dir) / "data"
    if not (data / "ground_truth.json").is_file():
        raise InputError(f"{model_dir} has no data/ground_truth.json: evaluate a folder written by `lacy-mlx train`")
    trained = load_people(data / "ground_truth.json")
    chosen: dict[str, list[Person]] = {}
    if "frequent" in groups:
        chosen["frequent"] = [p for p in trained if p.mentions >= frequent_min][:per_group]
    if "seen once" in groups:
        chosen["seen once"] = [p for p in trained if p.mentions == 1][:per_group]
    fresh: list[dict] = []
    if "never seen" in groups:
        if seed is None:
            chosen["never seen"] = load_people(data / "heldout.json")[:per_group]
        else:
            _check_fresh_seed(Path(model_dir), seed)
            unseen = make_people(per_group, seed, max_mentions=1, exclude_names={p.name for p in trained})
            chosen["never seen"] = unseen
            fresh = evidence_records(unseen, seed)
    keep = {p.pid for members in chosen.values() for p in members} | {p.pid for p in trained[:distractors]}
    with open(data / "evidence.jsonl", encoding="utf-8") as f:
        records = [r for r in map(json.loads, f) if r["metadata"]["person"] in keep]
    return EvalPeople(chosen, records + fresh)


def _check_fresh_seed(model_dir: Path, seed: int) -> None:
    """A fresh knowledge base needs a seed the run did not use: person ids derive from the seed."""
    cfg_path = model_dir / "training_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    used = {cfg.get("corpus_seed", 1), cfg.get("heldout_seed", 2)}
    if seed in used:
        raise InputError(f"--seed {seed} is a seed this model was trained or held out with ({sorted(used)}): "
                         "pick another one for a fresh knowledge base")


def model_embedder(model_dir: str | Path) -> Any:
    """The embedder the model's query tower was trained against (else the default one)."""
    from lacy_mlx.embed import resolve_embedder
    from lacy_mlx.train.prepare import make_embedder

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    name = cfg.get("lacy", {}).get("query_tower", {}).get("embedder")
    return resolve_embedder(name) if name else make_embedder("default")


def fill_store(db: str | Path, records: Sequence[dict], embedder: Any | None = None) -> int:
    """Ingest ``records`` into the store at ``db`` (created if missing; an upsert); returns its chunks."""
    from lacy_mlx.store import Store

    with Store.open(db, embedder=embedder) as store:
        store.add_documents(records, batch_size=256)
        return int(store.count()["chunks"])


def eval_budget(share: float) -> Any:
    """The call budget one evaluation setting shares across its biographies (see the module doc).

    ``share`` is calls per generated token, the unit of :func:`lacy_mlx.train.metrics.call_rate`;
    the runtime's budget counts decode steps, and a call's step emits no token, so it gets
    ``share / (1 + share)`` of the steps.
    """
    from lacy_mlx.runtime.policy import CallBudget

    if not 0.0 < share < 1.0:
        raise InputError(f"a call budget is a share of tokens in (0, 1), e.g. 0.1; got {share}")
    return CallBudget(share / (1.0 + share), window=BUDGET_WINDOW, warmup=16, match_calls=True)


def interleaved(groups: dict[str, list[Person]]) -> list[tuple[str, Person]]:
    """(group, person) pairs taking one person of each group in turn: a budget shared by the
    biographies then sees the groups mixed, not one group after the other."""
    rows = [[(g, p) for p in ps] for g, ps in groups.items()]
    return [pair for i in range(max(map(len, rows), default=0)) for row in rows if i < len(row) for pair in [row[i]]]


def write_biography(lacy: Any, person: Person, *, alone: bool, max_tokens: int = 80,
                    threshold: float | None = None, budget: Any = None, probe: int = PROBE_TOKENS,
                    gate_mode: str | None = None, events: list | None = None) -> Biography:
    """One biography of ``person`` by ``lacy`` (a :class:`lacy_mlx.Lacy`), scored.

    ``alone``: no call allowed (<CALL> masked); otherwise one call per sentence at most, at the
    model's ``threshold`` (or under ``budget``: a share of tokens, or a
    :class:`~lacy_mlx.runtime.policy.CallBudget` kept across biographies); ``gate_mode`` replaces the model's
    gate mode (``entropy`` for a model never taught <CALL>). ``probe``: tokens of
    ``Call.alone`` each call is judged by (0: calls are counted but not judged). ``events``: when
    given, every runtime event is appended to it (the demo prints them).
    """
    from lacy_mlx.runtime.events import Call, Done, Token

    gate = {"max_calls": 0 if alone else None, "per_sentence": 1, "call_threshold": threshold,
            "budget": None if alone else budget, "mode": gate_mode}
    text, calls, done = "", [], None
    scores: list[tuple[int, float, float]] = []
    for ev in lacy.stream("<|endoftext|>" + person.name, max_tokens=max_tokens, probe=0 if alone else probe, **gate):
        if events is not None:
            events.append(ev)
        if isinstance(ev, Token):
            if alone and ev.p_call is not None and ev.entropy is not None:
                scores.append((len(text), float(ev.p_call), float(ev.entropy)))
            text += ev.text
        elif isinstance(ev, Call):
            calls.append(judge_call(person, text, ev.alone or ""))
        elif isinstance(ev, Done):
            done, text = ev, text + ev.trailing_text
    assert done is not None
    return Biography(person.pid, text, check_claims(person, text), calls, done.tokens, done.seconds, scores)


@dataclass
class EvalReport:
    """Biographies per setting (``alone``, ``cascade`` or ``budget=0.1``...) and group."""

    model: str
    groups: dict[str, list[str]]
    runs: dict[str, dict[str, list[Biography]]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, dict]]:
        """``{setting: {group: metrics}}`` (:func:`lacy_mlx.train.metrics.summarize`), recall against
        alone; group ``all`` pools the groups (its call rate is the one a budget setting matches)."""
        alone = self.runs.get("alone", {})
        out: dict[str, dict[str, dict]] = {}
        for setting, by_group in self.runs.items():
            pooled = {**by_group, ALL: [b for bios in by_group.values() for b in bios]}
            base = {**alone, ALL: [b for bios in alone.values() for b in bios]}
            out[setting] = {g: summarize(bios, base.get(g) if setting != "alone" else None)
                            for g, bios in pooled.items()}
        return out

    def table(self) -> str:
        """A fixed-width table, one row per setting and group."""
        cols = ("factual_precision", "claims_per_bio", "call_rate", "call_precision", "call_recall", "leakage",
                "tokens_per_s")
        heads = ("precision", "claims/bio", "calls/tok", "call prec", "call rec", "leakage", "tok/s")
        lines = [f"{'setting':<12} {'group':<11} {'true/claims':>11} " + " ".join(f"{h:>10}" for h in heads)]
        for setting, by_group in self.summary().items():
            for g, m in by_group.items():
                vals = " ".join(f"{'-' if m[c] is None else format(m[c], '.1f' if c == 'tokens_per_s' else '.3f'):>10}"
                                for c in cols)
                lines.append(f"{setting:<12} {g:<11} {str(m['true_claims']) + '/' + str(m['claims']):>11} {vals}")
        return "\n".join(lines)


def evaluate(model_dir: str | Path, *, db: str | Path | None = None, per_group: int = 20, seed: int | None = None,
             budgets: Sequence[float | None] = (None,), threshold: float | None = None, max_tokens: int = 80,
             query: str = "auto", k: int | None = None, distractors: int = 300, frequent_min: int = 10,
             groups: Sequence[str] = GROUPS, gate_mode: str | None = None) -> EvalReport:
    """Score ``model_dir`` alone and through the cascade, for each of ``budgets`` (None: the
    model's own threshold), on the groups of :func:`eval_people`. Each budget of the sweep is one
    :func:`eval_budget` shared by the setting's biographies, so that the measured call rate of the
    setting lands near it (below it only where one call per sentence allows no more).

    ``db``: the evidence store file (filled if needed; default: a temporary file). ``query``:
    ``latent`` (the query tower), ``text`` (name plus sentence, through the store's embedder) or
    ``auto`` (latent when the folder has a tower). ``k``: passages per call (default: the model's).
    ``gate_mode``: see :func:`write_biography` (the budget then moves that mode's threshold).
    """
    import lacy_mlx
    from lacy_mlx.query_tower import QueryTower
    from lacy_mlx.runtime.delegates import RetrievalDelegate, TextQuery

    model_dir = Path(model_dir)
    if query not in ("auto", "latent", "text"):
        raise InputError(f"query must be 'auto', 'latent' or 'text', got {query!r}")
    settings: list[tuple[str, bool, Any]] = [("alone", True, None)]  # checked before the store is filled
    settings += [("cascade" if b is None else f"budget={b:g}", False, None if b is None else eval_budget(b))
                 for b in budgets]
    chosen = eval_people(model_dir, per_group=per_group, seed=seed, frequent_min=frequent_min,
                         distractors=distractors, groups=groups)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(db) if db is not None else Path(tmp) / "evidence.db"
        fill_store(db, chosen.records, model_embedder(model_dir))
        if query == "auto":
            query = "latent" if QueryTower.load(model_dir) is not None else "text"
        lacy = lacy_mlx.load(str(model_dir), delegate=RetrievalDelegate(
            str(db), query=TextQuery(anchor=True) if query == "text" else "latent", k=k))
        report = EvalReport(model_dir.name, {g: [p.pid for p in ps] for g, ps in chosen.groups.items()})
        try:
            for name, alone, shared in settings:
                runs: dict[str, list[Biography]] = {g: [] for g in chosen.groups}
                for g, p in interleaved(chosen.groups):
                    runs[g].append(write_biography(lacy, p, alone=alone, max_tokens=max_tokens, threshold=threshold,
                                                   budget=shared, gate_mode=gate_mode))
                report.runs[name] = runs
        finally:
            lacy.delegate.store.close()
    return report


def copy_probe_groups(model_dir: str | Path, *, per_group: int = 10, seed: int | None = None,
                      frequent_min: int = 10) -> dict[str, dict]:
    """:func:`lacy_mlx.train.copy_eval.copy_probe` summaries for the first ``per_group`` people of each
    group of :func:`eval_people` (distractor passages drawn from the training people)."""
    from lacy_mlx.train.copy_eval import copy_probe

    chosen = eval_people(model_dir, per_group=per_group, seed=seed, frequent_min=frequent_min, distractors=0)
    trained = load_people(Path(model_dir) / "data" / "ground_truth.json")
    return {g: copy_probe(model_dir, ps, distractors=trained).summary() for g, ps in chosen.groups.items()}
