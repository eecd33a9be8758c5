"""Retrieval quality: recall@1/@5 of vector, keyword and hybrid search on labelled query sets.

Run: `python benchmarks/retrieval.py [--people 100] [--codes 100] [--questions FILE --docs PATH...]`.
Prints a table and one JSON line. Query sets (each query labelled with the document that answers it):

- ``kb-flare``: the synthetic knowledge base's evidence passages (the demo model's
  ``data/evidence.jsonl``); queries built by the runtime's FLARE-style :class:`TextQuery` (the demo's
  ``anchor=True``: the prompt, a person's name, before the sentence head of a biography template,
  "She was born in").
- ``identifiers``: generated passages that each carry a made-up code, a number or a name (orders,
  error codes, employee numbers, all alike but for the identifier), asked for by that identifier,
  bare ("KQ-7731") and in a question ("Where did order KQ-7731 ship from?"); stored beside the
  knowledge base's passages.
- ``kb-latent`` (with ``--latent``): the runtime's latent queries, as the demo makes them by default:
  the demo model runs on a sentence head that names the person ("Ada Moreau was born in") and calls
  at its end; the query tower maps the hidden state there to a vector. ``vector`` is that vector
  alone; ``keyword`` and the ``hybrid`` rows fuse it with the keyword ranking of the text the
  runtime has at that point (``LatentQuery.keywords``: ``TextQuery(anchor=True)``). The same
  contexts searched by text (``kb-latent-text``) compare the two paths; ``-heldout`` sets ask
  about the bundle's held-out people, whom the model and its tower never saw in training.
- ``--questions FILE``: JSONL lines ``{"question": "...", "doc": "..."}`` (other keys, such as the
  bundled set's ``id``/``answer``, are ignored; lines without ``doc`` are skipped); ``doc`` is the
  answer's external id as stored (a JSONL line's ``id``) or the name or path tail of the file that
  holds it (``marie-curie.md``); the files or folders given by ``--docs`` are ingested into a
  store of their own with ``--max-tokens``/``--overlap``.

``hybrid@w`` rows re-fuse the same two candidate lists with keyword weight ``w`` (the store uses
``keyword.KEYWORD_WEIGHT``); ``rrf`` is reciprocal rank fusion (k=60) of the same lists.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from lacy_mlx.chunker import ChunkerConfig
from lacy_mlx.embed import Embedder, default_embedder, resolve_embedder
from lacy_mlx.errors import InputError
from lacy_mlx.ingest import iter_documents, read_documents
from lacy_mlx.runtime.delegates import TextQuery
from lacy_mlx.runtime.delegates.base import CallContext, Help
from lacy_mlx.runtime.delegates.retrieval import LatentQuery
from lacy_mlx.store import Store
from lacy_mlx.store.keyword import KEYWORD_WEIGHT, MIN_DEPTH, fuse
from lacy_mlx.tokens import END_OF_TEXT
from lacy_mlx.train import pools
from lacy_mlx.train.corpus import BIO_TEMPLATES, RELATIONS, Person, load_people

DEMO_MODEL = Path(__file__).resolve().parents[1] / "lacy_mlx" / "data" / "demo-model"
DEMO_DATA = DEMO_MODEL / "data"
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


class CachedEmbedder(Embedder):
    """The same embedder, remembering query vectors (each query is embedded once for all modes)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self._seen: dict[str, np.ndarray] = {}

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) > 1:
            return self.inner.embed_batch(texts)
        if texts[0] not in self._seen:
            self._seen[texts[0]] = self.inner.embed_batch(texts)[0]
        return self._seen[texts[0]][None]


def kb_flare_queries(people_n: int, seed: int) -> list[tuple[str, set[str]]]:
    """FLARE-style text queries for each relation of the first ``people_n`` people, as the runtime builds them."""
    rng = random.Random(seed)
    builder = TextQuery(anchor=True)
    out = []
    for person in load_people(DEMO_DATA / "ground_truth.json")[:people_n]:
        pronoun = "She" if person.gender == "f" else "He"
        for rel in RELATIONS:
            template = rng.choice(BIO_TEMPLATES[rel])
            subject = person.name if rng.random() < 0.3 else pronoun  # as render_biography words it
            poss = "her" if person.gender == "f" else "his"
            head = template.split("{v}")[0].format(S=subject, P=poss.capitalize(), p=poss).rstrip()
            pieces = tuple(w if i == 0 else " " + w for i, w in enumerate(head.split()))
            ctx = CallContext(step=0, prompt="<|endoftext|>" + person.name, question="<|endoftext|>" + person.name,
                              text=head, sentence_tokens=pieces, sentence_confidence=(1.0,) * len(pieces))
            out.append((builder.build(ctx), {f"{person.pid}/{rel}"}))
    return out


class _Recorder:
    """A delegate that keeps the runtime's context at a call (its hidden state included)."""

    name, kind, needs_hidden = "recorder", "callback", True

    def __init__(self) -> None:
        self.ctx: CallContext | None = None

    def __call__(self, ctx: CallContext) -> Help:
        self.ctx = ctx
        return Help(kind="evidence", passages=("-",))


def latent_queries(model_dir: Path, people: list[Person], seed: int) -> tuple[list, np.ndarray]:
    """``(text queries, latent vectors)`` at a call forced after each relation's sentence head, per person."""
    import lacy_mlx
    from lacy_mlx.query_tower import QueryTower

    tower = QueryTower.load(model_dir)
    if tower is None:
        raise SystemExit(f"{model_dir} has no query tower (query_tower.safetensors)")
    recorder, latent = _Recorder(), LatentQuery(tower)
    lacy = lacy_mlx.load(str(model_dir), delegate=recorder)
    rng = random.Random(seed)
    texts, vecs = [], []
    for person in people:
        poss = "her" if person.gender == "f" else "his"
        for rel in RELATIONS:
            template = rng.choice([t for t in BIO_TEMPLATES[rel] if t.startswith("{S}")])
            head = template.split("{v}")[0].format(S=person.name, P=poss.capitalize(), p=poss).rstrip()
            recorder.ctx = None
            for _ in lacy.stream(END_OF_TEXT + head, max_tokens=1, max_calls=1, call_threshold=0.0):
                pass
            assert recorder.ctx is not None  # threshold 0: the call happens at the first step
            texts.append((latent.keywords(recorder.ctx), {f"{person.pid}/{rel}"}))  # the runtime's keyword text
            vecs.append(latent.build(recorder.ctx))
    return texts, np.stack(vecs)


def identifier_docs(n: int, seed: int) -> tuple[list[dict], list[tuple[str, set[str]]]]:
    """``n`` passages per family (orders, error codes, employee numbers) and two queries for each."""
    rng = random.Random(seed)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    docs, queries, taken = [], [], set()

    def fresh(make):
        while (value := make()) in taken:
            pass
        taken.add(value)
        return value

    for i in range(n):
        code = fresh(lambda: f"{rng.choice(letters)}{rng.choice(letters)}-{rng.randint(1000, 9999)}")
        city, name = rng.choice(pools.CITIES), f"{rng.choice(pools.FIRST_NAMES_F)} {rng.choice(pools.LAST_NAMES)}"
        docs.append({"id": f"order/{i}", "text": f"Order {code} shipped from {city} to {name} on "
                     f"{rng.randint(1, 28)} {rng.choice(pools.MONTHS)} {rng.randint(2015, 2025)}."})
        queries += [(code, {f"order/{i}"}), (f"Where did order {code} ship from?", {f"order/{i}"})]
        err = fresh(lambda: f"0x{rng.randrange(16**8):08X}")
        part = rng.choice(("pump", "valve", "sensor", "fan", "board", "relay"))
        docs.append({"id": f"error/{i}", "text": f"Error {err} means the {part} controller timed out; "
                     f"restart the {part} and check its cable."})
        queries += [(err, {f"error/{i}"}), (f"What does error {err} mean?", {f"error/{i}"})]
        num = fresh(lambda: str(rng.randint(100000, 999999)))
        who = f"{rng.choice(pools.FIRST_NAMES_M)} {rng.choice(pools.LAST_NAMES)}"
        docs.append({"id": f"staff/{i}", "text": f"{who} holds employee number {num} in the "
                     f"{rng.choice(pools.FIELDS)} department."})
        queries += [(num, {f"staff/{i}"}), (f"Who has employee number {num}?", {f"staff/{i}"})]
    return docs, queries


def question_set(path: Path) -> list[tuple[str, set[str]]]:
    """Queries of a ``--questions`` file, each labelled with its ``doc``."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if obj.get("doc") is None:
            continue
        if not isinstance(obj.get("question"), str) or not isinstance(obj["doc"], str):
            raise InputError(f"{path}:{lineno}: expected {{\"question\": str, \"doc\": str}}")
        out.append((obj["question"], {obj["doc"]}))
    return out


def _matches(hit, labels: set[str]) -> bool:
    """The hit's external id is a label, or it comes from a file whose path ends with one."""
    ext = hit.external_id or ""
    if ext in labels:
        return True
    source = unquote(ext.split("#L")[0]) if ext.startswith("file://") else ""
    return any(source.endswith("/" + label) for label in labels)


def evaluate(store: Store, queries: list[tuple[str, set[str]]],
             vectors: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """recall@1 / @5 per mode (and per fusion variant) over ``queries``; ``vectors`` (one per query)
    replace the texts' embeddings in the vector ranking (``hybrid`` is then their fusion at the
    store's weight with the texts' keyword ranking, as the store fuses)."""
    found: dict[str, list[int]] = {}  # mode -> rank of the first right hit (99 when missing)

    def record(mode: str, ids: list[int], right: set[int]) -> None:
        found.setdefault(mode, []).append(next((r for r, c in enumerate(ids) if c in right), 99))

    for i, (text, labels) in enumerate(queries):
        vec = store.embedder.embed(text) if vectors is None else vectors[i]
        by_vec = store.search(vec, k=MIN_DEPTH, mode="vector")
        try:
            by_kw = store.search(text, k=MIN_DEPTH, mode="keyword")
        except InputError:
            by_kw = []
        hybrid = store.search(text, k=5, mode="hybrid") if vectors is None else []
        right = {h.chunk_id for h in by_vec + by_kw + hybrid if _matches(h, labels)}
        cosine = {h.chunk_id: h.score for h in by_vec}
        cosine.update(store._cosines([h.chunk_id for h in by_kw if h.chunk_id not in cosine], vec))
        bm25 = {h.chunk_id: h.score for h in by_kw}
        record("vector", [h.chunk_id for h in by_vec], right)
        record("keyword", [h.chunk_id for h in by_kw], right)
        record("hybrid", [h.chunk_id for h in hybrid] if vectors is None else [c for c, _ in fuse(cosine, bm25, 5)],
               right)
        for w in WEIGHTS:
            record(f"hybrid@{w}", [c for c, _ in fuse(cosine, bm25, 5, weight=w)], right)
        rrf: dict[int, float] = {}
        for ranking in ([h.chunk_id for h in by_vec], [h.chunk_id for h in by_kw]):
            for rank, cid in enumerate(ranking, 1):
                rrf[cid] = rrf.get(cid, 0.0) + 1.0 / (60 + rank)
        record("rrf", sorted(rrf, key=lambda c: (-rrf[c], c)), right)
    return {mode: {"recall@1": float(np.mean([r < 1 for r in ranks])), "recall@5": float(np.mean([r < 5 for r in ranks]))}
            for mode, ranks in found.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=100, help="people whose 7 relations are asked (kb-flare)")
    ap.add_argument("--codes", type=int, default=100, help="passages per identifier family")
    ap.add_argument("--questions", type=Path, help="JSONL of {question, doc}")
    ap.add_argument("--docs", nargs="+", default=[], help="files or folders holding the --questions' documents")
    ap.add_argument("--max-tokens", type=int, default=128, help="chunk size for --docs (default: the store's)")
    ap.add_argument("--overlap", type=int, default=16, help="chunk overlap for --docs")
    ap.add_argument("--embedder", default=None, help="embedder name (default: the store default, MiniLM if installed)")
    ap.add_argument("--latent", nargs="?", type=Path, const=DEMO_MODEL, default=None, metavar="MODEL",
                    help="also the latent (query-tower) path of MODEL (default: the bundled demo model)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    embedder = CachedEmbedder(resolve_embedder(args.embedder) if args.embedder else default_embedder())
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.people or args.codes or args.latent:  # the synthetic sets share one store: each other's distractors
            with Store.open(Path(tmp) / "kb.db", embedder=embedder) as store:
                id_docs, id_queries = identifier_docs(args.codes, args.seed)
                store.add_documents(read_documents(DEMO_DATA / "evidence.jsonl"), batch_size=256)
                store.add_documents(id_docs, batch_size=256)
                if args.people:
                    results["kb-flare"] = {"queries": args.people * len(RELATIONS),
                                           **evaluate(store, kb_flare_queries(args.people, args.seed))}
                if id_queries:
                    results["identifiers"] = {"queries": len(id_queries), **evaluate(store, id_queries)}
                if args.latent:
                    trained = load_people(DEMO_DATA / "ground_truth.json")[: args.people]
                    for name, people in (("kb-latent", trained), ("kb-latent-heldout", load_people(DEMO_DATA / "heldout.json"))):
                        if not people:
                            continue
                        texts, vecs = latent_queries(args.latent, people, args.seed)
                        results[name] = {"queries": len(texts), **evaluate(store, texts, vecs)}
                        results[name.replace("latent", "latent-text")] = {"queries": len(texts), **evaluate(store, texts)}
                print(f"kb store: {store.count()['chunks']} chunks")
        if args.questions:
            if not args.docs:
                ap.error("--questions needs --docs: the files or folders that hold the answers")
            with Store.open(Path(tmp) / "questions.db", embedder=embedder) as store:
                store.add_documents(iter_documents(args.docs), batch_size=64,
                                    chunker=ChunkerConfig(args.max_tokens, args.overlap))
                qs = question_set(args.questions)
                if not qs:
                    ap.error(f"{args.questions} holds no questions with a doc")
                results[args.questions.name] = {"queries": len(qs), **evaluate(store, qs)}
                print(f"{args.questions.name} store: {store.count()['chunks']} chunks")
    if not results:
        ap.error("nothing to measure: give --people, --codes or --questions")
    print(f"retrieval benchmark: embedder {embedder.name}; store hybrid weight {KEYWORD_WEIGHT}")
    modes = [m for m in next(iter(results.values())) if m != "queries"]
    print(f"{'set':<16} {'queries':>7}  " + "  ".join(f"{m:>13}" for m in modes))
    for name, row in results.items():
        print(f"{name:<16} {row['queries']:>7}  " + "  ".join(
            f"{row[m]['recall@1']:.3f}/{row[m]['recall@5']:.3f}" for m in modes))
    print("(each cell: recall@1/recall@5)")
    print(json.dumps({"benchmark": "retrieval", "embedder": embedder.name, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
