"""Decoders through mlx-lm's own model classes, resolved as ``mlx_lm.load`` resolves them.

``build_model`` hands config.json to mlx-lm's class lookup (its ``model_type`` remapping, e.g.
mistral -> llama, then ``mlx_lm.models.<module>``), so every architecture the installed mlx-lm
implements converts, and the output loads with ``mlx_lm.load``.
"""
from __future__ import annotations

import difflib
import pkgutil
import re
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .call_tokens import token_matrices
from .errors import ConvertError, MissingConfigError, MissingDependencyError, UnknownArchitectureError
from .families import Family, encoders

_MODULE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def build_model(config: dict[str, Any], config_path: str) -> nn.Module:
    """Instantiate the mlx-lm ``Model`` for ``config`` (parameters stay lazy until loaded).

    ``config_path`` names the file in messages. Raises UnknownArchitectureError when the
    installed mlx-lm has no model for ``config["model_type"]``, MissingDependencyError when its
    module needs a package that is not installed, MissingConfigError when ``ModelArgs`` rejects
    the config.
    """
    model_cls, args_cls = _classes(config, config_path)
    try:
        return model_cls(args_cls.from_dict(config))
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        raise MissingConfigError(
            f"{config_path}: cannot build the mlx-lm {_module_of(model_cls)} model from it "
            f"({type(exc).__name__}: {exc}); the config lacks or mis-states a required field"
        ) from exc


def mlx_module(model: nn.Module) -> str:
    """The ``mlx_lm.models`` module a built model comes from (after remapping), e.g. "llama"."""
    return _module_of(type(model))


def mlx_names(model: nn.Module, family: Family, weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Source tensor names -> the model's parameter names: the family's renames, then mlx-lm's sanitize.

    A left-over tensor equal to the model's input embedding is the tied output head that a
    PyTorch state dict stores twice; it is dropped (any other left-over fails the shape check).
    """
    weights = family.rename(weights)
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    return _drop_tied_copies(model, weights)


def keeps_some_float32(model: nn.Module) -> bool:
    """Whether the model keeps some parameters out of a cast (so casting while reading is unsafe)."""
    return hasattr(model, "cast_predicate")


def _classes(config: dict[str, Any], config_path: str) -> tuple[type, type]:
    from mlx_lm.utils import _get_classes  # mlx-lm's own lookup: remapping + importlib

    model_type = str(config.get("model_type"))
    if not _MODULE_NAME.match(model_type):
        raise _unknown(config, config_path)
    try:
        return _get_classes(config)
    except ValueError as exc:  # mlx-lm wraps the ImportError
        missing = exc.__cause__
        if isinstance(missing, ModuleNotFoundError) and (missing.name or "").startswith("mlx_lm.models."):
            raise _unknown(config, config_path) from exc
        raise MissingDependencyError(
            f"{config_path}: mlx-lm's {model_type} model cannot be imported ({missing or exc}); "
            "install the package it names"
        ) from exc
    except AttributeError as exc:  # a helper module (cache, rope_utils) without a Model
        raise _unknown(config, config_path) from exc
    except SystemExit as exc:  # a few mlx-lm modules exit when an optional package is absent
        raise MissingDependencyError(
            f"{config_path}: mlx-lm's {model_type} model needs a package that is not installed "
            "(mlx-lm printed which one above); install it and convert again"
        ) from exc


def _unknown(config: dict[str, Any], config_path: str) -> UnknownArchitectureError:
    import mlx_lm
    import mlx_lm.models

    model_type = str(config.get("model_type"))
    names = sorted(m.name for m in pkgutil.iter_modules(mlx_lm.models.__path__))
    close = difflib.get_close_matches(model_type, names, n=3)
    hint = f" (close: {', '.join(close)})" if close else ""
    return UnknownArchitectureError(
        f"{config_path}: model_type {model_type!r} (architectures {config.get('architectures') or []}) "
        f"is not a model mlx-lm {getattr(mlx_lm, '__version__', '')} implements{hint}; upgrading "
        f"mlx-lm (pip install -U mlx-lm) may add it. lacy-mlx also converts the encoders: "
        f"{', '.join(encoders())}"
    )


def _module_of(cls: type) -> str:
    return cls.__module__.rsplit(".", 1)[-1]


def _drop_tied_copies(model: nn.Module, weights: dict[str, mx.array]) -> dict[str, mx.array]:
    expected = {k for k, _ in tree_flatten(model.parameters())}
    extra = [k for k in weights if k not in expected]
    if not extra:
        return weights
    try:
        embed = token_matrices(model).embed
    except ConvertError:  # no embedding found: the shape check reports the left-overs
        return weights
    if embed not in weights:
        return weights
    table = weights[embed]
    for key in extra:
        value = weights[key]
        if value.shape == table.shape and value.dtype == table.dtype and mx.array_equal(value, table).item():
            del weights[key]
    return weights
