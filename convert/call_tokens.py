"""``<CALL>`` surgery: add lacy-mlx's special tokens to a tokenizer and give them embedding rows.

The input embedding and the untied output head are found on the built model (``token_matrices``),
so no per-family key is needed. New ids come from the tokenizer (the next free ids). When the
embedding already has spare rows past the tokenizer's length (common: vocab padded to a multiple
of 64/128), those are reused; otherwise the embedding (and an untied head) grow. New rows start as
the mean of the real tokens' rows. Old rows are untouched, so old tokens' logits cannot change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from lacy_mlx.tokens import CALL_TOKEN, EVIDENCE_END, EVIDENCE_START, SPECIAL_TOKENS, LacySection

from .errors import ConvertError, MissingConfigError

_EMBEDDINGS = (nn.Embedding, nn.QuantizedEmbedding)
_LINEARS = (nn.Linear, nn.QuantizedLinear)


class TokenMatrices(NamedTuple):
    """Parameter paths (MLX names) of a model's token rows: ``embed`` is the input embedding's
    weight, ``head`` the untied output head's weight, or None when the head is tied to ``embed``."""

    embed: str
    head: str | None


class _Call(NamedTuple):
    """One recorded layer call of the probe pass."""

    module: nn.Module
    kind: str  # "embed" (an embedding lookup), "linear", or "as_linear" (a tied head)
    x: Any
    out: mx.array


def token_matrices(model: nn.Module) -> TokenMatrices:
    """Find the input embedding and the untied output head of a built (mlx-lm) model.

    One probe forward pass is traced without evaluating anything (MLX is lazy, so it costs no
    memory even for an unloaded model): the embedding is the Embedding / QuantizedEmbedding the
    token ids go through; the head is the last Linear / QuantizedLinear (or ``as_linear``) whose
    output is vocabulary-sized, and None when that is the embedding's ``as_linear`` or no Linear
    does it (tied). Raises ConvertError when the forward pass shows no token embedding.
    """
    ids = mx.array([[0]])
    calls = _trace(model, ids)
    lookups = [c for c in calls if c.kind == "embed"]
    hits = [c for c in lookups if c.x is ids] or [  # the ids themselves, else a copy of them
        c for c in lookups if getattr(c.x, "shape", None) == ids.shape and mx.issubdtype(c.x.dtype, mx.integer)]
    if not hits:
        raise ConvertError(
            f"the mlx-lm {_name(model)} model does not send the token ids through an Embedding "
            "layer, so <CALL> rows cannot be added to it"
        )
    embed = hits[0].module
    rows = embed.weight.shape[0]  # packed quantized weights keep one row per token
    heads = [c for c in calls if c.kind != "embed" and c.out.shape[-1] == rows]
    names = {id(m): path for path, m in model.named_modules()}
    head = f"{names[id(heads[-1].module)]}.weight" if heads and heads[-1].kind == "linear" else None
    return TokenMatrices(f"{names[id(embed)]}.weight", head)


def embedding_rows(model: nn.Module) -> int:
    """Rows of the model's input embedding (its vocabulary as built from config.json)."""
    path = token_matrices(model).embed
    return int(dict(tree_flatten(model.parameters()))[path].shape[0])


def _name(model: nn.Module) -> str:
    return type(model).__module__.rsplit(".", 1)[-1]


def _trace(model: nn.Module, ids: mx.array) -> list[_Call]:
    """Run ``model(ids)`` lazily with its embedding and linear layers recording their calls.

    Only this model's layer instances are swapped to recording subclasses (and swapped back),
    so other models, threads and the classes themselves are not touched.
    """
    calls: list[_Call] = []
    swapped = [(m, type(m)) for _, m in model.named_modules() if isinstance(m, _EMBEDDINGS + _LINEARS)]
    for module, cls in swapped:
        module.__class__ = _recording(cls, calls)
    try:
        model(ids)
    except Exception as exc:
        raise ConvertError(
            f"the mlx-lm {_name(model)} model failed a probe forward pass ({type(exc).__name__}: {exc}), "
            "so its token embedding cannot be found"
        ) from exc
    finally:
        for module, cls in swapped:
            module.__class__ = cls
    return calls


def _recording(cls: type, calls: list[_Call]) -> type:
    """A subclass of ``cls`` whose calls (and ``as_linear`` for embeddings) append to ``calls``."""
    kind = "embed" if issubclass(cls, _EMBEDDINGS) else "linear"

    def call(self, x, *args, **kwargs):
        out = cls.__call__(self, x, *args, **kwargs)
        calls.append(_Call(self, kind, x, out))
        return out

    body: dict[str, Any] = {"__call__": call}
    if kind == "embed":
        def as_linear(self, x):
            out = cls.as_linear(self, x)
            calls.append(_Call(self, "as_linear", x, out))
            return out

        body["as_linear"] = as_linear
    return type(cls.__name__, (cls,), body)


@dataclass
class TokenPlan:
    """Ids chosen for the special tokens and how the embedding rows change."""

    ids: dict[str, int]
    tokenizer_len: int  # real tokens before surgery (rows past it are spare)
    rows_before: int
    rows_after: int
    added: tuple[str, ...]  # tokens the tokenizer did not have yet
    tokenizer_json: str = field(repr=False, default="")

    def lacy_section(self, gate: dict[str, Any] | None = None) -> LacySection:
        """The config.json ``lacy`` section recording these ids."""
        return LacySection(
            call_token_id=self.ids[CALL_TOKEN], evidence_start_id=self.ids[EVIDENCE_START],
            evidence_end_id=self.ids[EVIDENCE_END], gate=dict(gate or {}),
        )


def plan_tokens(src_root: Path, rows: int) -> TokenPlan:
    """Add the tokens to ``src_root/tokenizer.json`` in memory; ``rows`` is the embedding's row count."""
    from tokenizers import AddedToken, Tokenizer

    path = src_root / "tokenizer.json"
    if not path.is_file():
        raise MissingConfigError(
            f"{path}: missing; --add-call-token edits tokenizer.json (save the tokenizer with a "
            "fast tokenizer, e.g. AutoTokenizer(...).save_pretrained, to create it)"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exceptions on bad JSON
        raise ConvertError(f"{path}: cannot be read by the tokenizers library ({exc})") from exc
    length = max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1
    added = tuple(t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    rows_after = max(rows, max(ids.values()) + 1)
    return TokenPlan(ids, min(length, rows), rows, rows_after, added, tok.to_str())


def grow_rows(weights: dict[str, mx.array], matrices: TokenMatrices, plan: TokenPlan,
              model: nn.Module | None = None) -> dict[str, mx.array]:
    """Give the new tokens mean-initialised rows in the embedding and the untied output head.

    Every tensor of those layers with one row per token grows (a head's bias too). Quantized
    layers (``.scales`` beside the weight) get the mean of their dequantized rows, quantized
    with the layer's settings, which are read from ``model`` (required for them).
    """
    for key in filter(None, matrices):
        if key not in weights:
            continue
        module = key.rsplit(".", 1)[0]
        names = [f"{module}.{p}" for p in ("weight", "scales", "biases", "bias")
                 if f"{module}.{p}" in weights and weights[f"{module}.{p}"].shape[0] == plan.rows_before]
        means = _quantized_means(weights, module, plan, model) if f"{module}.scales" in weights else {}
        for name in names:
            weights[name] = _with_rows(weights[name], plan, means.get(name))
    return weights


def _quantized_means(weights: dict[str, mx.array], module: str, plan: TokenPlan,
                     model: nn.Module | None) -> dict[str, mx.array]:
    """The mean dequantized row of a quantized layer, quantized again: {tensor name: row}."""
    if model is None:
        raise ConvertError(f"{module} is quantized; growing it needs the model to read its quantization")
    layer = dict(model.named_modules())[module]
    if hasattr(layer, "bits"):
        settings = {"group_size": layer.group_size, "bits": layer.bits, "mode": getattr(layer, "mode", "affine")}
    else:  # a float layer about to be quantized: mlx-lm infers the settings from the shapes
        from mlx_lm.utils import infer_quant_config

        settings = infer_quant_config(module, layer, weights)
    n = plan.tokenizer_len
    biases = weights.get(f"{module}.biases")
    dense = mx.dequantize(weights[f"{module}.weight"][:n], weights[f"{module}.scales"][:n],
                          None if biases is None else biases[:n], **settings)
    mean = dense.astype(mx.float32).mean(axis=0, keepdims=True).astype(weights[f"{module}.scales"].dtype)
    parts = mx.quantize(mean, **settings)
    return {f"{module}.{p}": row[0] for p, row in zip(("weight", "scales", "biases"), parts)}


def _with_rows(matrix: mx.array, plan: TokenPlan, row: mx.array | None = None) -> mx.array:
    """``matrix`` (rows, ...) with the new tokens' rows set to ``row`` (default: the mean real row)."""
    if row is None:
        row = matrix[: plan.tokenizer_len].astype(mx.float32).mean(axis=0).astype(matrix.dtype)
    if plan.rows_after > matrix.shape[0]:
        pad = mx.broadcast_to(row, (plan.rows_after - matrix.shape[0], *matrix.shape[1:]))
        matrix = mx.concatenate([matrix, pad], axis=0)  # (rows_after, ...)
    fresh = [plan.ids[t] for t in plan.added if plan.ids[t] < plan.rows_before]
    if fresh:  # reused spare rows: overwrite whatever untrained values they held
        matrix[mx.array(fresh)] = mx.broadcast_to(row, (len(fresh), *matrix.shape[1:]))
    return matrix


def update_config(config: dict[str, Any], plan: TokenPlan) -> int:
    """Set every ``*vocab_size`` key holding the old row count (top level or one nested config,
    e.g. text_config) to the new one; return how many keys changed."""
    changed = 0
    for node in [config] + [v for v in config.values() if isinstance(v, dict)]:
        for key, value in node.items():
            if key.endswith("vocab_size") and value == plan.rows_before and type(value) is int:
                node[key] = plan.rows_after
                changed += 1
    return changed


def write_tokenizer(src_root: Path, out_dir: Path, plan: TokenPlan) -> None:
    """Write the edited tokenizer.json and register the tokens in tokenizer_config.json."""
    (out_dir / "tokenizer.json").write_text(plan.tokenizer_json, encoding="utf-8")
    cfg_path = src_root / "tokenizer_config.json"
    if not cfg_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    decoder = cfg.setdefault("added_tokens_decoder", {})
    for token in SPECIAL_TOKENS:
        decoder[str(plan.ids[token])] = {
            "content": token, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }
    for key in ("additional_special_tokens", "extra_special_tokens"):
        if isinstance(cfg.get(key), list):
            cfg[key] += [t for t in SPECIAL_TOKENS if t not in cfg[key]]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
