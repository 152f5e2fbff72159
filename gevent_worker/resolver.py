"""Host names are looked up in the gevent hub's thread pool, as gevent does; IP addresses are not.

gevent hands every getaddrinfo() to a native thread of its hub's pool, since a lookup may block on DNS,
an IP address included: ~75 µs of CPU and a hand-off to a thread per new connection, where the C library
parses an address in ~2 µs without any lookup. A burst of new connections to a provider at an IP address
(a local Ollama or vLLM server, the benchmark's mock, Redis at 127.0.0.1) paid it for each at once, with
up to ten pool threads contending for the worker's GIL: bench/README.md, (c)'s p99.
"""

from __future__ import annotations

import _socket
import os
from typing import Any

from gevent.resolver.thread import Resolver

# Only a numeric host and a numeric (or no) port: then getaddrinfo() parses them and looks nothing up.
_NO_LOOKUP = _socket.AI_NUMERICHOST | _socket.AI_NUMERICSERV


class NumericFirstResolver(Resolver):
    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, socktype: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        if isinstance(host, str):
            try:
                return _socket.getaddrinfo(host, port, family, socktype, proto, flags | _NO_LOOKUP)
            except _socket.gaierror:
                pass  # a name (or a service name): looked up in the pool, as before
        return super().getaddrinfo(host, port, family, socktype, proto, flags)


def use_numeric_first_resolver(hub: Any) -> None:
    """Resolve through NumericFirstResolver in this worker, unless GEVENT_RESOLVER chose a resolver."""
    if not os.environ.get("GEVENT_RESOLVER"):
        hub.resolver = NumericFirstResolver(hub)
