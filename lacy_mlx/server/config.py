"""Server settings and the safety rules they must satisfy before anything binds."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lacy_mlx.errors import InputError

# Browsers' Origin header for pages served from this machine.
_LOCAL_ORIGIN = re.compile(r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """How ``lacy-mlx serve`` listens and what it accepts.

    - ``host``/``port``: loopback by default; any other address needs ``api_key``. Port 0 picks a free one.
    - ``api_key``: when set, every request but ``GET /health`` and CORS preflights needs
      ``Authorization: Bearer <key>`` (compared in constant time).
    - ``cors_origins``: browser origins allowed besides ``http(s)://localhost|127.0.0.1|[::1][:port]``;
      ``("*",)`` allows any. A request from another origin gets a 403 (a web page must not drive
      a local model unasked).
    - ``max_body_bytes``: larger request bodies get a 413. ``max_tokens_cap``: larger
      ``max_tokens`` get a 400; ``default_max_tokens`` when a request gives none.
    - ``queue_size``: requests that may wait behind the running one; more get a 429 at once.
    - ``keepalive_s``: SSE comment lines are sent when nothing else was for this long (a delegate
      working, a long prefill). ``poll_s``: how often a waiting request checks that its client is there.
    - ``model_id``: the name clients pass as ``model`` (default: the model folder's name).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1 << 20
    max_tokens_cap: int = 4096
    default_max_tokens: int = 512
    queue_size: int = 8
    keepalive_s: float = 5.0
    poll_s: float = 0.1
    model_id: str | None = None

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise InputError("the API key is empty: give a non-empty --api-key, or none")
        if not is_loopback(self.host) and not self.api_key:
            raise InputError(
                f"binding {self.host} exposes the model beyond this machine: set an API key "
                "(--api-key or --api-key-file), or bind 127.0.0.1"
            )
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be in [0, 65535], got {self.port}")
        for name in ("max_body_bytes", "max_tokens_cap", "default_max_tokens", "queue_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.keepalive_s <= 0 or self.poll_s <= 0:
            raise InputError("keepalive_s and poll_s must be positive")

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin in self.cors_origins or bool(_LOCAL_ORIGIN.match(origin))

    def host_allowed(self, host_header: str | None) -> bool:
        """On a loopback bind, only local Host names (a DNS-rebinding page sends its own)."""
        if not is_loopback(self.host) or host_header is None:
            return True
        name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        return name.strip("[]").lower() in _LOCAL_HOSTS or is_loopback(name)
