"""An OpenAI-compatible local server for a :class:`~lacy_mlx.Lacy` (``lacy-mlx serve``).

Layout: ``config`` (settings, safety rules), ``requests`` (OpenAI bodies -> checked requests,
errors), ``responses`` (OpenAI response and chunk shapes), ``collect`` and ``stops`` (events ->
text, calls, stop sequences), ``worker`` (one model thread behind a bounded queue), ``http``
(routing, auth, CORS, limits, SSE), ``app`` (:class:`LacyServer`, :func:`serve`).
"""
from lacy_mlx.server.app import LacyServer, serve
from lacy_mlx.server.config import ServerConfig, is_loopback
from lacy_mlx.server.requests import ApiError

__all__ = ["ApiError", "LacyServer", "ServerConfig", "is_loopback", "serve"]
