"""Hidden states and logits from one forward pass of an mlx-lm model.

mlx-lm models compute ``logits = head(model.model(x, cache))``; the head is ``lm_head`` or the
tied embedding's ``as_linear``. The latent query builder needs the last hidden state at a call,
so the decode step runs the two halves itself instead of ``model(x, cache)``: no second pass.
:func:`split_forward` finds the head for a family and checks once, on a one-token input, that
the two halves reproduce ``model(x)``; families whose head does more (soft-capping, scaling)
are refused with a clear error rather than given wrong logits.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from lacy_mlx.errors import LacyError

Forward = Callable[[mx.array, list], tuple[mx.array, mx.array]]


class HiddenStateUnsupported(LacyError):
    """This model family's logits are not a plain projection of ``model.model``'s output."""


def _tied(model: nn.Module) -> bool:
    args = getattr(model, "args", None)
    tied = getattr(args, "tie_word_embeddings", None)
    if tied is None:
        tied = getattr(model, "tie_word_embeddings", None)
    if tied is None:  # gpt2/gemma: no flag and no lm_head
        tied = "lm_head" not in model
    return bool(tied)


def output_head(model: nn.Module) -> Callable[[mx.array], mx.array]:
    """The projection from final (normed) hidden states to logits, per mlx-lm's family conventions:
    ``lm_head`` when the model has an untied one, else the token embedding's ``as_linear``.
    The one definition: the runtime's hidden-state path and training's loss both use it."""
    inner = getattr(model, "model", None)
    if inner is None:
        raise HiddenStateUnsupported(f"{type(model).__module__} has no `.model`: hidden states are not reachable")
    if not _tied(model) and "lm_head" in model:
        return model.lm_head
    for name in ("embed_tokens", "wte", "tok_embeddings"):
        emb = getattr(inner, name, None)
        if emb is not None and hasattr(emb, "as_linear"):
            return emb.as_linear
    raise HiddenStateUnsupported(f"cannot find the output head of {type(model).__module__}")


def split_forward(model: nn.Module) -> Forward:
    """A function ``(tokens (1, T), cache) -> (hidden (1, H) at the last position, logits (1, V))``.

    Raises :class:`HiddenStateUnsupported` when the split does not reproduce ``model(x)``.
    """
    head = output_head(model)
    if not _split_reproduces(model, head):
        raise HiddenStateUnsupported(
            f"model type {type(model).__module__.rsplit('.', 1)[-1]} transforms its logits beyond "
            "a linear head; latent queries need a llama/qwen/gpt2/phi3-style model (use the text query)"
        )

    def forward(tokens: mx.array, cache: list) -> tuple[mx.array, mx.array]:
        h = model.model(tokens, cache)[:, -1, :]  # (1, H)
        return h, head(h)  # (1, H), (1, V)

    return forward


_CHECKED: dict[int, weakref.ref] = {}  # id(model) -> model, for models whose split was verified


def _split_reproduces(model: nn.Module, head: Callable[[mx.array], mx.array]) -> bool:
    """Whether ``head(model.model(x)) == model(x)`` on a one-token probe (checked once per model)."""
    ref_model = _CHECKED.get(id(model))
    if ref_model is not None and ref_model() is model:
        return True
    probe = mx.array([[0]])
    ref = model(probe)
    got = head(model.model(probe))
    ok = ref.shape == got.shape and bool(mx.allclose(ref, got, rtol=1e-4, atol=1e-4).item())
    if ok:
        _CHECKED[id(model)] = weakref.ref(model)
    return ok


def plain_forward(model: nn.Module) -> Forward:
    """``model(x, cache)`` with no hidden state (``None`` in its place): the default path."""

    def forward(tokens: mx.array, cache: list) -> tuple[mx.array, mx.array]:
        return None, model(tokens, cache=cache)[:, -1, :]  # type: ignore[return-value]

    return forward
