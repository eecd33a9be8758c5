"""Exceptions raised by lacy-mlx. Every message says what went wrong and what to do."""


class LacyError(Exception):
    """Base class of every error lacy-mlx raises on purpose."""


class StoreError(LacyError):
    """The knowledge store cannot do what was asked; nothing stored was changed."""


class StoreUpgradeNeeded(StoreError):
    """A store written by an older schema was opened read-only; a writable open migrates it."""


class InputError(LacyError, ValueError):
    """An argument (text, vector, file) is unusable; it was rejected before any write."""
