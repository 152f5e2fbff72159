"""gevent_worker/resolver.py: IP addresses are parsed in place, names still go to gevent's thread pool."""

from __future__ import annotations

import _socket
import socket
from types import SimpleNamespace

import pytest

from gevent_worker.resolver import NumericFirstResolver, use_numeric_first_resolver


class _RecordingPool:
    """Stands in for the hub's thread pool: runs the lookup here and remembers it was asked."""

    def __init__(self) -> None:
        self.lookups: list[tuple] = []

    def apply(self, function, args, kwargs=None):
        self.lookups.append(args)
        return function(*args, **(kwargs or {}))


def _hub() -> SimpleNamespace:
    """What the resolver takes from gevent's hub: its thread pool and the errors it does not report."""
    return SimpleNamespace(threadpool=_RecordingPool(), NOT_ERROR=(), resolver="gevent's own")


def _resolver() -> tuple[NumericFirstResolver, _RecordingPool]:
    hub = _hub()
    return NumericFirstResolver(hub), hub.threadpool


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.1.2.3"])
def test_an_ip_address_is_answered_without_the_thread_pool(host):
    resolver, pool = _resolver()
    answer = resolver.getaddrinfo(host, 8080, 0, socket.SOCK_STREAM)
    assert answer == _socket.getaddrinfo(host, 8080, 0, socket.SOCK_STREAM)
    assert pool.lookups == []


@pytest.mark.parametrize(("host", "port"), [("localhost", 8080), ("127.0.0.1", "http")])
def test_a_name_or_a_service_name_is_looked_up_in_the_thread_pool(host, port):
    resolver, pool = _resolver()
    answer = resolver.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    assert answer == _socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    assert pool.lookups == [(host, port, 0, socket.SOCK_STREAM, 0, 0)]  # the caller's own flags


def test_an_address_of_the_wrong_family_fails_as_it_would_without_it():
    resolver, _ = _resolver()
    with pytest.raises(socket.gaierror):
        resolver.getaddrinfo("::1", 80, socket.AF_INET, socket.SOCK_STREAM)


def test_the_worker_uses_it_unless_gevent_resolver_chose_one(monkeypatch):
    hub = _hub()
    monkeypatch.setenv("GEVENT_RESOLVER", "ares")
    use_numeric_first_resolver(hub)
    assert hub.resolver == "gevent's own"
    monkeypatch.delenv("GEVENT_RESOLVER")
    use_numeric_first_resolver(hub)
    assert isinstance(hub.resolver, NumericFirstResolver)
