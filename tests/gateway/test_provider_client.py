"""The pooled provider client: pools found by URL, and the reuse check of a pooled connection."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
import trustme

from app.errors import ProviderError
from app.providers.base import ProviderSettings
from app.providers.openai import OpenAIAdapter
from app.services.gateway import upstream
from app.services.gateway.upstream import ProviderClient, _open_now
from tests.upstreams.server import Upstream, json_response


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


def test_headers_and_a_stream_larger_than_the_read_buffer_arrive_whole():
    # A response reads through a 2 KB buffer (RESPONSE_BUFFER): 6 KB of headers, then 64 KB of events in
    # chunks of every size, must come through intact, and the connection must go back to the pool.
    big = "h" * 3000
    lines = [f"data: {index:05d} " + "y" * (index % 500) for index in range(250)]
    stream = ("\n".join(lines) + "\n").encode()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for _ in range(2):  # two calls on one kept-alive connection
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nX-Big: {big}\r\nX-Big-Too: {big}\r\nTransfer-Encoding: chunked\r\n\r\n"
                conn.sendall(head.encode())
                offset, size = 0, 1
                while offset < len(stream):
                    piece = stream[offset : offset + size]
                    conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    offset, size = offset + len(piece), size * 3 % 7919 + 1
                conn.sendall(b"0\r\n\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = ProviderClient(connect_timeout=1.0)
    pool, path = client.route(f"http://127.0.0.1:{port}/v1/chat/completions")
    try:
        for _ in range(2):
            response = upstream.exchange(pool, "GET", path, None, {}, 1.0, 5.0)
            assert response.headers["X-Big"] == big and response.headers["X-Big-Too"] == big
            assert list(upstream.iter_lines(response, "test")) == lines
        assert pool.num_connections == 1  # the second call reused the first one's connection
    finally:
        server.join(5)
        listener.close()


def test_an_answer_that_closes_the_connection_is_read_to_its_end():
    # http.client gives such a connection's socket to the response and drops its own at once: the socket
    # stays open while the response's file is, as socket.makefile() arranges (it counts its files).
    body = b'{"ok": true, "pad": "' + b"x" * 5000 + b'"}'
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
            conn.sendall(head)
            for offset in range(0, len(body), 1000):  # the body after the head was read, in pieces
                time.sleep(0.02)
                conn.sendall(body[offset : offset + 1000])

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = ProviderClient(connect_timeout=1.0)
    pool, path = client.route(f"http://127.0.0.1:{port}/v1/chat/completions")
    try:
        response = upstream.exchange(pool, "GET", path, None, {}, 1.0, 5.0)
        assert upstream.read_json(response, "test") == {"ok": True, "pad": "x" * 5000}
    finally:
        server.join(5)
        listener.close()


def test_a_request_goes_out_in_one_write_and_a_large_body_after_its_head(monkeypatch):
    writes: list[bytes] = []
    real_sendall = socket.socket.sendall

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def recording_sendall(sock, data, *args):
        if sock.getpeername()[1] == port:  # the client's writes, not the server's
            writes.append(bytes(data))
        return real_sendall(sock, data, *args)

    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for _ in range(2):  # two calls on one kept-alive connection, each read to the body's end
                request = b""
                while b"\r\n\r\n" not in request or len(request.split(b"\r\n\r\n", 1)[1]) < int(
                    request.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]
                ):
                    request += conn.recv(65536)
                received.append(request)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    monkeypatch.setattr(socket.socket, "sendall", recording_sendall)
    pool, path = ProviderClient(connect_timeout=1.0).route(f"http://127.0.0.1:{port}/v1/chat/completions")
    small, large = b'{"model": "m"}', b'{"pad": "' + b"x" * upstream.ONE_WRITE_BODY + b'"}'
    try:
        for body in (small, large):
            writes.clear()
            response = upstream.exchange(
                pool, "POST", path, body, {"Content-Type": "application/json"}, 1.0, 5.0
            )
            assert response.status == 200 and response.read() == b"{}"
            response.release_conn()
            if body is small:  # head and body in one write
                assert len(writes) == 1 and writes[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
                assert writes[0].endswith(b"\r\n\r\n" + small)
            else:  # past ONE_WRITE_BODY the body is not copied behind the head: two writes, as urllib3 does
                assert len(writes) == 2 and writes[1] == large
    finally:
        server.join(5)
        listener.close()
    assert [request.split(b"\r\n\r\n", 1)[1] for request in received] == [small, large]


def _keep_alive_server(body: bytes) -> tuple[socket.socket, list[int]]:
    """Answers every GET with `body`, keeping connections open; the list counts accepted connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def answer(conn: socket.socket) -> None:
        with conn:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                _, pending = pending.split(b"\r\n\r\n", 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted


def test_a_connection_goes_back_to_the_pool_only_when_its_body_was_read():
    body = b"0123456789" * 100
    listener, accepted = _keep_alive_server(body)
    pool, path = ProviderClient(connect_timeout=1.0).route(f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
    try:
        response = upstream.exchange(pool, "GET", path, None, {}, 1.0, 5.0)
        assert response.read() == body and not response.closed
        response.release_conn()
        assert response.closed and response.connection is None
        response.close()  # a reader's cleanup after the body's end: the pooled connection stays open
        upstream.interrupt(response)

        response = upstream.exchange(pool, "GET", path, None, {}, 1.0, 5.0)  # the same connection
        assert len(accepted) == 1
        assert response.read1(10) == body[:10]
        response.release_conn()  # 990 bytes unread: the connection is closed, not pooled
        response.release_conn()  # twice is harmless

        response = upstream.exchange(pool, "GET", path, None, {}, 1.0, 5.0)
        assert response.read() == body  # not the previous answer's leftovers
        response.release_conn()
        assert len(accepted) == 2
    finally:
        listener.close()


def test_a_provider_over_tls_is_verified_against_the_trusted_authorities():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    with Upstream(lambda r: json_response({"tls": True}), ssl_context=server_context) as provider:
        adapter = OpenAIAdapter(
            ProviderSettings(name="tls", base_url=f"https://localhost:{provider.port}/v1", api_key="k")
        )
        request = adapter.chat_request({"model": "m", "messages": []}, "m", stream=False)
        client = ProviderClient(connect_timeout=2.0)
        with pytest.raises(ProviderError) as refused:  # the system's authorities do not know trustme's
            upstream.open_response(client, adapter, request, read_timeout=5.0)
        assert refused.value.kind == "server" and "could not be reached" in str(refused.value)
        assert provider.requests == []

        with ca.cert_pem.tempfile() as bundle:
            trusting = ProviderClient(connect_timeout=2.0)
            trusting.route(request.url)[0].ca_certs = bundle
            for _ in range(2):  # the second call reuses the verified connection
                response = upstream.open_response(trusting, adapter, request, read_timeout=5.0)
                assert upstream.read_json(response, "tls") == {"tls": True}
        assert len(provider.requests) == 2 and trusting.route(request.url)[0].num_connections == 1
