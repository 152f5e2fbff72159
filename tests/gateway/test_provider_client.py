"""The pooled provider client: pools found by URL, and the reuse check of a pooled connection."""

from __future__ import annotations

import socket

from app.services.gateway import upstream
from app.services.gateway.upstream import ProviderClient, _open_now


def test_a_route_is_the_origins_pool_and_the_path_with_its_query():
    client = ProviderClient(connect_timeout=1.0)
    pool, path = client.route("http://127.0.0.1:9/v1/chat/completions")
    other_pool, other_path = client.route("http://127.0.0.1:9/v1beta/models/x:generate?alt=sse")
    assert path == "/v1/chat/completions"
    assert other_path == "/v1beta/models/x:generate?alt=sse"
    assert other_pool is pool  # one pool per origin, whatever the path
    assert client.route("http://127.0.0.1:9/v1/chat/completions")[0] is pool
    assert client.route("http://127.0.0.1:10/v1")[0] is not pool
    assert pool.ConnectionCls is upstream._Connection
    assert client.route("https://example.com/v1")[0].ConnectionCls is upstream._TLSConnection


def test_the_route_table_stays_bounded(monkeypatch):
    monkeypatch.setattr(upstream, "MAX_ROUTES", 3)
    client = ProviderClient(connect_timeout=1.0)
    for index in range(10):
        client.route(f"http://127.0.0.1:9/v1/{index}")
    assert len(client._routes) <= 3


def test_a_connection_is_reused_only_while_nothing_waits_on_it():
    ours, peer = socket.socketpair()
    try:
        assert _open_now(ours)
        peer.sendall(b"HTTP/1.1 200 OK\r\n")  # stray bytes: the next answer would be misread
        assert not _open_now(ours)
    finally:
        ours.close()
        peer.close()
    ours, peer = socket.socketpair()
    try:
        peer.close()  # the provider closed its end of an idle keep-alive connection
        assert not _open_now(ours)
    finally:
        ours.close()
