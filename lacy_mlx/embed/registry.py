"""Embedders by name: a store records its embedder's name and reopens with the same one."""
from __future__ import annotations

from collections.abc import Callable

from lacy_mlx.embed.base import MLX_ENCODER_PREFIX, Embedder
from lacy_mlx.embed.hashed import HashedEmbedder
from lacy_mlx.errors import LacyError

# prefix -> factory(argument after the first ':' or None); names are "<prefix>" or "<prefix>:<argument>".
_FACTORIES: dict[str, Callable[[str | None], Embedder]] = {}
# Names tried in order by default_embedder(); the first that builds wins.
_DEFAULT_ORDER: list[str] = []


def register_embedder(prefix: str, factory: Callable[[str | None], Embedder], *, default: bool = False) -> None:
    """Make ``resolve_embedder(prefix[:arg])`` build ``factory(arg)``; ``default`` puts it ahead of the hashed one."""
    _FACTORIES[prefix] = factory
    if default and prefix not in _DEFAULT_ORDER:
        _DEFAULT_ORDER.insert(0, prefix)


def resolve_embedder(name: str) -> Embedder:
    """Build the embedder a store's ``embedder`` meta value names, e.g. ``hashed-ngram-v1:384``."""
    prefix, _, arg = name.partition(":")
    factory = _FACTORIES.get(prefix)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise LacyError(f"unknown embedder {name!r}; known kinds: {known}")
    return factory(arg or None)


def default_embedder() -> Embedder:
    """The best embedder available here: the MLX encoder when its model is installed, else hashed."""
    for prefix in _DEFAULT_ORDER:
        try:
            return _FACTORIES[prefix](None)
        except (ImportError, FileNotFoundError, LacyError):
            continue
    return HashedEmbedder()


def _mlx_encoder(arg: str | None) -> Embedder:
    """The MLX document encoder (all-MiniLM-L6-v2 by default). Imported here, on first use, so
    that opening a store does not load MLX; the encoder itself knows nothing of this registry.
    Raises ModelNotFoundError (a FileNotFoundError and LacyError) when the model is missing,
    which default_embedder() takes as "fall back to the next embedder"."""
    from lacy_mlx.encoder.embedder import MLXEncoder

    return MLXEncoder(arg)


register_embedder("hashed-ngram-v1", lambda arg: HashedEmbedder(dim=int(arg) if arg else 384))
register_embedder(MLX_ENCODER_PREFIX, _mlx_encoder, default=True)
