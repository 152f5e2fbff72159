"""The pooled outbound HTTP clients: a guarded one for user-given URLs, a plain one for trusted upstreams.

The guard lives in the transport, below DNS: `GuardedBackend.connect_tcp` resolves the host itself with
`socket.getaddrinfo`, refuses the connection when ANY resolved address is refused by the policy (a name
that answers both public and private addresses is treated as an attack, not load-balanced around), and
then dials the vetted IP literal, so nothing re-resolves between check and connect (no DNS rebinding).
TLS still verifies the certificate against, and sends SNI for, the URL's host name: httpcore passes the
origin host to start_tls, not the address we dialled. Every new connection, every retry and every redirect
hop goes through here; a pooled keep-alive connection was vetted when it was opened.

Time: httpcore gives every socket read of a response phase the same relative timeout, so an upstream that
sends a header line (or a "100 Continue") each second never trips it. Inside `io_deadline(at)` each
connect, read and write of the guarded client is clamped to the time left before `at` instead, and so is
the DNS lookup under gevent (the production worker). With real threads getaddrinfo cannot be interrupted
and is bounded only by the resolver's own timeouts.

One client per process, shared by threads (or greenlets under gevent's monkey-patching: httpcore's pool
uses threading locks and the socket module, both patched). Build it lazily after gunicorn forks.
Proxy environment variables and .netrc are ignored (trust_env=False): they would route around the guard.
"""

from __future__ import annotations

import http.cookiejar
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from app.utils.egress_guard import EgressPolicy
from app.utils.off_loop import gevent_active

VerifyTypes = bool | str | ssl.SSLContext

DEFAULT_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30.0)


# A context variable, not a backend attribute: pooled streams are shared by calls, and each thread (or
# greenlet) sees only the deadline of the call it is running.
_deadline: ContextVar[float | None] = ContextVar("io_deadline", default=None)


@contextmanager
def io_deadline(at: float) -> Iterator[None]:
    """Within the block, every socket operation of the guarded client must end by `at` (time.monotonic)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def _clamped(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` cut to the time left before the deadline; `expired` once none is left."""
    at = _deadline.get()
    if at is None:
        return timeout
    remaining = at - time.monotonic()
    if remaining <= 0:
        raise expired("the call's deadline has passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read, write and TLS handshake ends by the current io_deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _clamped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _lookup(host: str, port: int) -> list[Any]:
    """getaddrinfo, given up at the io_deadline under gevent: there the lookup runs in gevent's thread pool
    and the greenlet can stop waiting for it. A real thread cannot be taken out of getaddrinfo."""

    # Looked up on the module each call so gevent's patch (and tests' monkeypatch) take effect.
    def lookup() -> list[Any]:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)

    if _deadline.get() is None or not gevent_active():
        return lookup()
    import gevent

    remaining = _clamped(None, httpcore.ConnectTimeout)
    with gevent.Timeout(remaining, httpcore.ConnectTimeout(f"no answer from DNS for {host!r} in time")):
        return lookup()


class GuardedBackend(httpcore.NetworkBackend):
    """A sync network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: EgressPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpcore.SyncBackend()

    def _resolve(self, host: str, port: int) -> list[str]:
        try:
            infos = _lookup(host, port)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"could not resolve host: {exc}") from exc
        addresses: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = str(sockaddr[0]).split("%", 1)[0]
            if ip not in addresses:
                addresses.append(ip)
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: object | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve, vet every address, then dial the vetted addresses in order until one answers."""
        self._policy.check_port(port)
        addresses = self._resolve(host, port)
        self._policy.check_addresses(addresses)  # raises DestinationNotAllowed; httpx lets it through
        timeout = _clamped(timeout, httpcore.ConnectTimeout)  # a slow DNS answer may have used it up
        deadline = None if timeout is None else time.monotonic() + timeout
        last_error: Exception = httpcore.ConnectError(f"no address for host {host!r}")
        for ip in addresses:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                stream = self._inner.connect_tcp(
                    ip,
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,  # type: ignore[arg-type]
                )
                return _DeadlineStream(stream)
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                last_error = exc
        raise last_error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: object | None = None
    ) -> httpcore.NetworkStream:
        """Never: a user-given URL has no business with local sockets."""
        raise httpcore.ConnectError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        """Delegate (httpcore's own connect retries; we keep those at zero)."""
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the pool rebuilt on a GuardedBackend.

    httpx 0.28 has no public hook for the network backend, so we replace `_pool` (the attribute
    `HTTPTransport.handle_request` uses); tests/test_external_service.py fails if that ever changes.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        verify: VerifyTypes = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        inner_backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        context = ssl_context(verify)
        super().__init__(verify=context, trust_env=False, limits=limits)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(policy, inner_backend),
        )


def ssl_context(verify: VerifyTypes) -> ssl.SSLContext:
    """An SSLContext from True/False, a CA bundle path or a context (httpx deprecates paths)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify, trust_env=False)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """The client is shared by every user: no upstream's cookie may ride along on another call."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


def _cookieless_jar() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=_NoCookies())


def build_http_client(
    policy: EgressPolicy,
    *,
    verify: VerifyTypes = True,
    limits: httpx.Limits = DEFAULT_LIMITS,
    user_agent: str = "multi-llm-api/0.1",
    inner_backend: httpcore.NetworkBackend | None = None,
) -> httpx.Client:
    """The guarded client for user-given URLs; redirects are left to the caller to check hop by hop.

    `inner_backend` is what actually dials the vetted IP (httpcore.SyncBackend by default; tests swap it).
    """
    return httpx.Client(
        transport=GuardedTransport(policy, verify=verify, limits=limits, inner_backend=inner_backend),
        cookies=_cookieless_jar(),
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": user_agent},
    )


def build_trusted_client(
    *,
    timeout: httpx.Timeout | None = None,
    verify: VerifyTypes = True,
    limits: httpx.Limits = DEFAULT_LIMITS,
    user_agent: str = "multi-llm-api/0.1",
) -> httpx.Client:
    """The plain pooled client for operator-configured upstreams (LLM providers, an Ollama on loopback)."""
    return httpx.Client(
        timeout=timeout or httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=10.0),
        verify=ssl_context(verify),
        limits=limits,
        cookies=_cookieless_jar(),
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": user_agent},
    )
