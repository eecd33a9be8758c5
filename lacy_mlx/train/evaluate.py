"""FactScore-style exact fact checking of generated biographies against the ground truth.

For each person the model writes a biography from their name (greedy). Every sentence that
matches a biography template is an atomic claim ``(relation, value)``; it is true when the value
equals the person's gold value. Two modes:

- ``slm``: the ``<CALL>`` logit is set to -inf (the model alone);
- ``cascade``: when p(``<CALL>``) >= ``threshold`` the model calls (at most once per sentence); the
  top-``k`` evidence passages (by the query tower's vector, or with ``query="text"`` by the name
  plus the current sentence) are appended inline as ``<CALL><EVIDENCE>...</EVIDENCE>`` and
  decoding continues.

Leakage (cascade mode): at each call, the model's own continuation with ``<CALL>`` at -inf is
decoded for a few tokens; the call leaks when that continuation states the gold value of the
sentence's relation. Reported: factual precision, claims per biography, call rate (calls per
generated token), leakage, split by person groups (e.g. frequent vs rare).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from lacy_mlx.query_tower import QueryTower
from lacy_mlx.tokens import CALL_TOKEN, END_OF_TEXT, EVIDENCE_END, EVIDENCE_START
from lacy_mlx.train.bpe import load_tokenizer
from lacy_mlx.train.copying import format_evidence
from lacy_mlx.train.corpus import BIO_TEMPLATES, Person, parse_claims
from lacy_mlx.train.model import lm_logits


@dataclass
class PersonResult:
    pid: str
    text: str
    claims: list[tuple[str, str, bool]]
    calls: int
    tokens: int
    leaks: int


@dataclass
class GroupScore:
    """Aggregates over a group of people (``precision`` = true claims / claims)."""

    people: int = 0
    claims: int = 0
    true_claims: int = 0
    calls: int = 0
    tokens: int = 0
    leaks: int = 0

    @property
    def precision(self) -> float:
        return self.true_claims / self.claims if self.claims else 0.0

    @property
    def call_rate(self) -> float:
        return self.calls / self.tokens if self.tokens else 0.0

    @property
    def leakage(self) -> float:
        return self.leaks / self.calls if self.calls else 0.0

    def add(self, r: PersonResult) -> None:
        self.people += 1
        self.claims += len(r.claims)
        self.true_claims += sum(ok for *_, ok in r.claims)
        self.calls += r.calls
        self.tokens += r.tokens
        self.leaks += r.leaks

    def summary(self) -> dict:
        return {**asdict(self), "precision": round(self.precision, 4), "call_rate": round(self.call_rate, 4),
                "leakage": round(self.leakage, 4), "claims_per_person": round(self.claims / max(self.people, 1), 2)}


@dataclass
class EvalReport:
    mode: str
    groups: dict[str, GroupScore] = field(default_factory=dict)
    people: list[PersonResult] = field(default_factory=list)

    def summary(self) -> dict:
        return {"mode": self.mode, **{g: s.summary() for g, s in self.groups.items()}}


class Retriever:
    """Brute-force top-k over evidence passages, by query-tower vector or by text."""

    def __init__(self, passages: list[str], embeddings: np.ndarray, embedder=None) -> None:
        self.passages, self.emb, self.embedder = passages, embeddings.astype(np.float32), embedder

    def by_vector(self, q: np.ndarray, k: int) -> list[str]:
        return [self.passages[i] for i in np.argsort(-(self.emb @ q))[:k]]

    def by_text(self, text: str, k: int) -> list[str]:
        return self.by_vector(self.embedder.embed(text), k)


class BiographyWriter:
    """Greedy biography generation with an optional cascade, for one loaded model folder."""

    def __init__(self, model, model_dir: str | Path, *, threshold: float = 0.5, k: int = 3,
                 max_tokens: int = 110, probe_tokens: int = 10, query: str = "auto") -> None:
        self.model = model
        self.tok = load_tokenizer(model_dir)
        self.ids = {t: self.tok.token_to_id(t) for t in (CALL_TOKEN, END_OF_TEXT, EVIDENCE_START, EVIDENCE_END)}
        self.tower = QueryTower.load(model_dir)
        self.threshold, self.k, self.max_tokens, self.probe_tokens = threshold, k, max_tokens, probe_tokens
        if query not in ("auto", "latent", "text"):  # the runtime's names: latent = the query tower
            raise ValueError(f"query must be 'auto', 'latent' or 'text', got {query!r}")
        self.query = query

    def _forward(self, ids: list[int], cache) -> tuple[mx.array, mx.array]:
        h = self.model.model(mx.array(ids)[None], cache=cache)[:, -1]  # (1, H)
        return h, lm_logits(self.model, h)[0].astype(mx.float32)

    def _probe(self, logits: mx.array, cache, n: int) -> str:
        """The model's own next ``n`` tokens with <CALL> at -inf; the cache is trimmed back after."""
        out, fed = [], 0
        logits = mx.array(logits)
        for i in range(n):
            logits[self.ids[CALL_TOKEN]] = -mx.inf
            t = int(mx.argmax(logits))
            if t == self.ids[END_OF_TEXT]:
                break
            out.append(t)
            if i == n - 1:
                break
            _, logits = self._forward([t], cache)
            fed += 1
        trim_prompt_cache(cache, fed)
        return self.tok.decode(out)

    def write(self, person: Person, retriever: Retriever | None, mode: str) -> PersonResult:
        call_id, eot = self.ids[CALL_TOKEN], self.ids[END_OF_TEXT]
        context = [eot] + self.tok.encode(person.name, add_special_tokens=False).ids
        gen: list[int] = list(context[1:])
        cache = make_prompt_cache(self.model)
        h, logits = self._forward(context, cache)
        calls = leaks = tokens = 0
        may_call = True  # one call per sentence: a call's value is written before the next may start
        while tokens < self.max_tokens:
            p_call = float(mx.softmax(logits)[call_id])
            if mode == "cascade" and retriever is not None and may_call and p_call >= self.threshold:
                calls += 1
                may_call = False
                leaks += self._leaked(person, gen, self._probe(logits, cache, self.probe_tokens))
                if self.tower is not None and self.query in ("auto", "latent"):
                    passages = retriever.by_vector(np.array(self.tower(h)[0]), self.k)
                else:  # the subject's name plus the sentence so far, for any text embedder
                    passages = retriever.by_text(f"{person.name}: {self._sentence(gen)}", self.k)
                block = [call_id, self.ids[EVIDENCE_START]]
                block += self.tok.encode(format_evidence(passages), add_special_tokens=False).ids
                block.append(self.ids[EVIDENCE_END])
                context += block
                h, logits = self._forward(block, cache)
                logits[call_id] = -mx.inf  # no second call before a value token is written
            logits[call_id] = -mx.inf
            t = int(mx.argmax(logits))
            if t == eot:
                break
            tokens += 1
            context.append(t)
            gen.append(t)
            may_call = may_call or "." in self.tok.id_to_token(t)
            h, logits = self._forward([t], cache)
        text = self.tok.decode(gen)
        claims = [(rel, v, v == person.facts.get(rel)) for rel, v in parse_claims(text)]
        return PersonResult(person.pid, text, claims, calls, tokens, leaks)

    def _sentence(self, gen: list[int]) -> str:
        text = self.tok.decode(gen)
        return text[text.rfind(".") + 1:].strip() or text

    def _leaked(self, person: Person, gen: list[int], probe: str) -> bool:
        """Does the model, forbidden to call (``probe``), state the gold value of this sentence's relation?"""
        sentence = self._sentence(gen)
        rel = _relation_of(sentence)
        if rel is None:
            return any(v in sentence + probe for v in person.facts.values())
        return person.facts[rel] in sentence + probe


def _relation_of(prefix: str) -> str | None:
    """The relation whose template head the sentence prefix matches (e.g. "She was born in")."""
    best = None
    for rel, temps in BIO_TEMPLATES.items():
        for t in temps:
            head = t.split("{v}")[0]
            words = head.replace("{S}", "").replace("{P}", "").replace("{p}", "").split()
            if words and prefix.split()[-len(words):] == words:
                best = rel
    return best


def evaluate(model_dir: str | Path, people: list[Person], *, mode: str = "cascade",
             groups: dict[str, set[str]] | None = None, passages: list[dict] | None = None,
             threshold: float = 0.5, k: int = 3, max_tokens: int = 110, query: str = "auto") -> EvalReport:
    """Write a biography per person and check its claims; ``groups`` maps a name to person ids."""
    from mlx_lm import load

    model_dir = Path(model_dir)
    model, _ = load(str(model_dir))
    writer = BiographyWriter(model, model_dir, threshold=threshold, k=k, max_tokens=max_tokens, query=query)
    retriever = _retriever(model_dir, passages) if mode == "cascade" else None
    report = EvalReport(mode, {"all": GroupScore(), **{g: GroupScore() for g in (groups or {})}})
    for person in people:
        r = writer.write(person, retriever, mode)
        report.people.append(r)
        report.groups["all"].add(r)
        for g, ids in (groups or {}).items():
            if person.pid in ids:
                report.groups[g].add(r)
    return report


def _retriever(model_dir: Path, passages: list[dict] | None) -> Retriever:
    from lacy_mlx.embed import resolve_embedder

    from_folder = passages is None
    if from_folder:
        passages = [json.loads(line) for line in (model_dir / "data" / "evidence.jsonl").open(encoding="utf-8")]
    cfg = json.loads((model_dir / "config.json").read_text())
    name = cfg.get("lacy", {}).get("query_tower", {}).get("embedder")
    from lacy_mlx.train.prepare import make_embedder

    embedder = resolve_embedder(name) if name else make_embedder("default")
    texts = [p["text"] for p in passages]
    cached = model_dir / "data" / "passages.npy"
    meta = model_dir / "data" / "passages.json"
    if from_folder and cached.is_file() and meta.is_file() and json.loads(meta.read_text())["embedder"] == embedder.name:
        emb = np.load(cached)  # embeddings of evidence.jsonl, row for row, saved by training
    else:
        emb = np.concatenate(list(embedder.embed_iter(texts, 64)))
    return Retriever(texts, emb, embedder)


def demo_groups(model_dir: str | Path, *, per_group: int = 40, frequent_min: int = 10) -> tuple[list[Person], dict]:
    """People to score from a trained folder: frequent (>= ``frequent_min`` mentions), rare (1), held-out."""
    from lacy_mlx.train.corpus import load_people

    data = Path(model_dir) / "data"
    people = load_people(data / "ground_truth.json")
    frequent = [p for p in people if p.mentions >= frequent_min][:per_group]
    rare = [p for p in people if p.mentions == 1][:per_group]
    heldout = load_people(data / "heldout.json")[:per_group]
    groups = {"frequent": {p.pid for p in frequent}, "rare": {p.pid for p in rare},
              "heldout": {p.pid for p in heldout}}
    return frequent + rare + heldout, groups


def copy_probe_groups(model_dir: str | Path, people: list[Person], groups: dict[str, set[str]], *,
                      per_group: int = 10) -> dict:
    """:func:`lacy_mlx.train.copy_eval.copy_probe` summaries for the first ``per_group`` people of each group."""
    from mlx_lm import load

    from lacy_mlx.train.copy_eval import copy_probe

    model, _ = load(str(model_dir))
    tok = load_tokenizer(model_dir)
    out = {}
    for name, ids in groups.items():
        members = [p for p in people if p.pid in ids][:per_group]
        out[name] = copy_probe(model, tok, members, distractors=people).summary()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m lacy_mlx.train.evaluate MODEL_DIR``: FactScore-style numbers, SLM alone vs cascade."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--per-group", type=int, default=40)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=None, help="passages per call (default: the model's lacy.retrieval.k, else 3)")
    ap.add_argument("--query", nargs="+", default=["latent", "text"], choices=("latent", "text"),
                    help="latent: the query tower; text: the name plus the sentence so far")
    a = ap.parse_args(argv)
    people, groups = demo_groups(a.model_dir, per_group=a.per_group)
    if a.k is None:
        from lacy_mlx.tokens import read_lacy_section

        a.k = int(read_lacy_section(a.model_dir).retrieval.get("k", 3))
    print(json.dumps({"copy_probe": copy_probe_groups(a.model_dir, people, groups, per_group=min(a.per_group, 10))}))
    print(json.dumps(evaluate(a.model_dir, people, mode="slm", groups=groups).summary()))
    for query in a.query:
        report = evaluate(a.model_dir, people, mode="cascade", groups=groups, threshold=a.threshold, k=a.k,
                          query=query)
        print(json.dumps({"query": query, **report.summary()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
