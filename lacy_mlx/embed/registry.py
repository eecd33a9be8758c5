"""Embedders by name: a store records its embedder's name and reopens with the same one."""
from __future__ import annotations

from collections.abc import Callable

from lacy_mlx.embed.base import Embedder
from lacy_mlx.embed.hashed import HashedEmbedder
from lacy_mlx.errors import LacyError

# prefix -> factory(argument after the first ':' or None). Later modules (the MLX encoder)
# register themselves here; names are "<prefix>" or "<prefix>:<argument>".
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
    _load_optional()
    prefix, _, arg = name.partition(":")
    factory = _FACTORIES.get(prefix)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise LacyError(f"unknown embedder {name!r}; known kinds: {known}")
    return factory(arg or None)


def default_embedder() -> Embedder:
    """The best embedder available here: the MLX encoder when its model is installed, else hashed."""
    _load_optional()
    for prefix in _DEFAULT_ORDER:
        try:
            return _FACTORIES[prefix](None)
        except (ImportError, FileNotFoundError, LacyError):
            continue
    return HashedEmbedder()


def _load_optional() -> None:
    """Import modules that register more embedders (the MLX encoder), if they exist."""
    try:
        import lacy_mlx.encoder  # noqa: F401  (registers "minilm"/"encoder" embedders)
    except ImportError:
        pass


register_embedder("hashed-ngram-v1", lambda arg: HashedEmbedder(dim=int(arg) if arg else 384))
