"""``lacy_mlx.load``: a model (a folder, a repo id, a loaded pair, or the embedded default) and
its delegate (retrieval from a store by default, with the model's own settings), wired into a
:class:`~lacy_mlx.runtime.lacy.Lacy`."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lacy_mlx.errors import InputError, LacyError
from lacy_mlx.runtime.delegates import RetrievalDelegate
from lacy_mlx.runtime.delegates.base import CallContext, Delegate
from lacy_mlx.runtime.delegates.retrieval import TextQuery, open_store
from lacy_mlx.runtime.inject import Placement
from lacy_mlx.runtime.kinds import Injection
from lacy_mlx.runtime.lacy import Lacy
from lacy_mlx.runtime.policy import GateConfig
from lacy_mlx.tokens import LacySection, special_ids

if TYPE_CHECKING:
    from lacy_mlx.embed import Embedder
    from lacy_mlx.store import Store


def load(
    model: str | Path | tuple[Any, Any] | None = None,
    *,
    db: str | Path | Store | None = None,
    embedder: Embedder | None = None,
    delegate: Delegate | Callable[[CallContext], object] | None = None,
    gate: GateConfig | None = None,
    injection: Injection = "auto",
    max_evidence_tokens: int = 256,
    retrieve_first: bool | None = None,
    placement: Placement = "system",
) -> Lacy:
    """Load a model and wire the runtime around it.

    - ``model``: a local MLX folder or a Hugging Face repo id (``mlx_lm.load``), or a
      ``(model, tokenizer)`` pair already loaded; None: the embedded default chat model
      (SmolLM2-135M-Instruct, :mod:`lacy_mlx.defaults`). The <CALL>/evidence ids come from
      config.json's ``lacy`` section, else from the tokenizer's vocabulary.
    - ``delegate``: what answers a call: a delegate (:mod:`lacy_mlx.runtime.delegates`) or a plain
      function (wrapped in a :class:`~lacy_mlx.runtime.delegates.CallbackDelegate`). Retrieval is
      ``RetrievalDelegate(store, query=..., k=...)``; the options it leaves None are the model's
      own (see below).
    - ``db``: the short form of ``delegate=RetrievalDelegate(db)``: a knowledge store path (opened
      read-only, with ``embedder`` if given) or a :class:`~lacy_mlx.store.Store`. Not with ``delegate``.
      The model's own retrieval settings: ``k`` from ``lacy.retrieval.k`` (else 3); the query from
      ``lacy.retrieval.query`` if set, else ``latent`` when the model ships a query tower whose
      vectors fit the store, else ``text`` (starting with the question's last sentence when
      ``lacy.retrieval.anchor`` is set, else only when the masked sentence is too short).
    - ``gate``: defaults to the ``lacy.gate`` section of config.json, else mode ``call`` for a
      model with <CALL> and ``entropy`` for one without.
    - ``injection``: ``auto`` | ``inline`` | ``prefix`` (see :mod:`lacy_mlx.runtime.inject`).
    - ``retrieve_first``: retrieve with the question before the first token (default: the
      model's ``lacy.retrieval.first``, else False).
    - ``placement``: where prefix injection puts passages in chat prompts: under a one-line
      instruction in the system turn (default, measured best on SmolLM2) or before the user's text.
    """
    if db is not None and delegate is not None:
        raise InputError("give db= (retrieval from that store) or delegate=, not both: "
                         "delegate=RetrievalDelegate(store, ...) configures retrieval")
    default_name = None
    if model is None:
        from lacy_mlx.defaults import NAME, default_model_dir

        model, default_name = default_model_dir(), NAME
    model_obj, tokenizer, model_dir, section = _load_model(model)
    specials = special_ids(tokenizer, section)
    if gate is None:
        mode = "call" if specials.call is not None else "entropy"
        gate = GateConfig.from_section(section.gate if section else {}, mode=mode)
    if db is not None:
        delegate = RetrievalDelegate(db if hasattr(db, "search") else open_store(db, embedder))
    if isinstance(delegate, RetrievalDelegate):
        delegate = _with_model_defaults(delegate, section, model_dir)
    retrieval = section.retrieval if section else {}
    if retrieve_first is None:
        retrieve_first = bool(retrieval.get("first", False))
    name = default_name or (Path(str(model)).name if not isinstance(model, tuple) else "model")
    return Lacy(model_obj, tokenizer, specials=specials, delegate=delegate, gate=gate, injection=injection,
                max_evidence_tokens=max_evidence_tokens, name=name, retrieve_first=retrieve_first,
                placement=placement)


def _with_model_defaults(delegate: RetrievalDelegate, section: LacySection | None,
                         model_dir: Path | None) -> RetrievalDelegate:
    """``delegate`` with the options it leaves to the model set from the model's config and folder."""
    retrieval = section.retrieval if section else {}
    query, tower = delegate.chosen["query"], delegate.chosen["tower"]
    if query is None:
        query, tower = _default_query(section, model_dir, tower, delegate.store)
        if query == "text":
            query = TextQuery(anchor=bool(retrieval.get("anchor", False)))
    if query == "latent" and tower is None:
        tower = _load_tower(model_dir)
    return delegate.with_defaults(query=query, tower=tower, k=int(retrieval.get("k", 3)))


def _load_model(model: Any) -> tuple[Any, Any, Path | None, LacySection | None]:
    if isinstance(model, tuple):
        if len(model) != 2:
            raise InputError("pass model as a path, a Hugging Face repo id, or a (model, tokenizer) pair")
        return model[0], model[1], None, None
    import mlx_lm

    try:
        model_obj, tokenizer, config = mlx_lm.load(str(model), return_config=True)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise LacyError(
            f"cannot load the model {str(model)!r}: {exc}. Give an MLX model folder (config.json, "
            "model*.safetensors, tokenizer files) or a Hugging Face repo id of an MLX model"
        ) from exc
    model_dir = Path(str(model)) if Path(str(model)).exists() else _cached_repo(str(model))
    section = LacySection.from_json(config.get("lacy") or {})
    return model_obj, tokenizer, model_dir, section


def _cached_repo(repo: str) -> Path | None:
    try:
        from mlx_lm.utils import hf_repo_to_path

        return hf_repo_to_path(repo)
    except Exception:  # not in the local Hugging Face cache: no folder to read extras from
        return None


def _default_query(section: LacySection | None, model_dir: Path | None, tower: Any, store: Any) -> tuple[str, Any]:
    """The model's own query mode for ``store``, and the tower it needs (None for text)."""
    named = (section.retrieval if section else {}).get("query")
    if named is not None:
        return str(named), tower
    if tower is None and model_dir is not None:
        from lacy_mlx.query_tower import QueryTower

        tower = QueryTower.load(model_dir)
    if tower is None or getattr(tower, "embed_dim", None) != getattr(store, "dim", None):
        return "text", None
    trained_for = _tower_embedder(model_dir)  # a tower only fits the embedder it was trained against
    if trained_for is not None and trained_for != getattr(store, "embedder_name", trained_for):
        return "text", None
    return "latent", tower


def _tower_embedder(model_dir: Path | None) -> str | None:
    import json

    try:
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8")) if model_dir else {}
    except (OSError, ValueError):
        return None
    return ((cfg.get("lacy") or {}).get("query_tower") or {}).get("embedder")


def _load_tower(model_dir: Path | None) -> Any:
    from lacy_mlx.query_tower import QueryTower

    tower = QueryTower.load(model_dir) if model_dir is not None else None
    if tower is None:
        raise InputError(
            "the latent query needs a query tower and the model folder has no query_tower.safetensors: "
            "train one with `lacy-mlx train`, or use query='text'"
        )
    return tower
