"""The production worker (gevent_worker/) keeps gunicorn's connection rules on gevent's HTTP server:
idle and slow connections are closed after `keepalive` seconds, and `keepalive = 0` and a draining worker
answer with `Connection: close`. Runs gunicorn for real, as a separate process."""

from __future__ import annotations

import signal
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.production_server import start_server

HEALTH = b"GET /api/health HTTP/1.1\r\nHost: gateway\r\n\r\n"


@pytest.fixture
def instance(request, tmp_path):
    # gunicorn's control socket, were it on, would go under $HOME: a fresh one per test.
    server = start_server(tmp_path, HOME=str(tmp_path / "home"), **request.param)
    yield server.process, server.port
    server.stop()


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response's head and body (the health answer has a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"closed before a response: {data!r}"
        data += part
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(_header(head, b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def _header(head: bytes, name: bytes) -> bytes:
    return next(
        line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(name + b":")
    )


def _refused_within(port: int, seconds: float) -> bool:
    """Whether new connections to the port are refused (the worker closed its listener) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("instance", [{"GUNICORN_KEEPALIVE": "1"}], indirect=True)
def test_kept_alive_connection_serves_requests_then_closes_when_idle(instance):
    _, port = instance
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(3):  # keep-alive: several requests on one connection
            sock.sendall(HEALTH)
            head, _ = _response(sock)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"connection: close" not in head.lower()
        started = time.monotonic()
        assert _closed_within(sock, 5.0)
        assert 0.5 < time.monotonic() - started < 4.0


@pytest.mark.parametrize("instance", [{"GUNICORN_KEEPALIVE": "1"}], indirect=True)
def test_headers_that_trickle_in_are_cut_off(instance):
    _, port = instance
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: gateway\r\n")  # and never the blank line
        sock.settimeout(5.0)
        answer = b""
        while part := sock.recv(65536):
            answer += part
        assert answer.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("instance", [{"GUNICORN_KEEPALIVE": "0"}], indirect=True)
def test_keepalive_zero_closes_every_connection_after_its_response(instance):
    _, port = instance
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEALTH)
        head, _ = _response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"connection: close" in head.lower()
        assert _closed_within(sock, 2.0)


@pytest.mark.parametrize(
    "instance", [{"GUNICORN_KEEPALIVE": "5", "DRAIN_DELAY": "0.3", "GRACEFUL_TIMEOUT": "10"}], indirect=True
)
def test_a_draining_worker_closes_kept_alive_connections_after_their_next_response(instance):
    process, port = instance
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEALTH)
        head, _ = _response(sock)
        assert b"connection: close" not in head.lower()
        process.send_signal(signal.SIGTERM)
        # Past DRAIN_DELAY the worker stops taking connections. A fixed wait raced the signal's delivery
        # under load (gevent runs Python signal handlers between its loop's turns): wait until it has.
        assert _refused_within(port, 10.0)
        sock.sendall(HEALTH)
        head, _ = _response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"connection: close" in head.lower()  # a pooling proxy sends its next request elsewhere
        assert _closed_within(sock, 2.0)
    assert process.wait(15) == 0


@pytest.mark.parametrize("instance", [{"GUNICORN_CMD_ARGS": "--access-logfile=-"}], indirect=True)
def test_gunicorns_access_log_is_written_when_asked_for(instance, tmp_path):
    # Off by default (the app writes its own JSON line); an operator can still ask for gunicorn's.
    _, port = instance
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEALTH)
        head, _ = _response(sock)
        assert head.startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 5
    while '"GET /api/health HTTP/1.1" 200' not in (tmp_path / "server.log").read_text():
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.1)


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("instance", [{}], indirect=True)
def test_the_master_holds_neither_gevent_nor_a_control_socket(instance, tmp_path):
    # The sum of an instance's processes is its memory: gevent lives in the worker only, and gunicorn's
    # control socket (an asyncio thread in the master, one path per user) is off.
    process, _ = instance
    workers = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(workers) == 1
    assert "gevent" in _mapped_files(int(workers[0]))
    assert "gevent" not in _mapped_files(process.pid)
    assert Path(f"/proc/{process.pid}/status").read_text().count("Threads:\t1\n") == 1
    assert not (tmp_path / "home" / ".gunicorn").exists()


@pytest.mark.parametrize("instance", [{}], indirect=True)
def test_headers_and_a_body_larger_than_the_read_buffer_are_read_whole(instance):
    # A connection reads through a 1 KB buffer (REQUEST_BUFFER); 4 KB of headers and a 51 KB body pass it.
    _, port = instance
    body = b'{"username": "nobody",' + b" " * 50_000 + b'"password": "' + b"p" * 1000 + b'"}'
    request = (
        b"POST /api/auth/login HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (index, b"v" * 200) for index in range(20))
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        head, answer = _response(sock)
        assert head.startswith(b"HTTP/1.1 401"), answer  # parsed whole: wrong credentials, not bad JSON
        sock.sendall(HEALTH)  # and the connection is still in step for its next request
        head, _ = _response(sock)
        assert head.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("instance", [{}], indirect=True)
def test_request_headers_reach_the_app_as_sent_and_an_overlong_one_is_refused(instance):
    # Request headers are parsed by app/utils/header_block.py (not the email package) in this worker.
    _, port = instance
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: gateway\r\nX-Request-ID: \t trace-abc\r\n\r\n")
        head, _ = _response(sock)
        assert head.startswith(b"HTTP/1.1 200") and _header(head, b"x-request-id") == b"trace-abc"
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: gateway\r\nX-Request-ID: trace-\r\n folded\r\n\r\n")
        head, _ = _response(sock)  # a folded line goes through the email parser, as before: one value
        echoed = _header(head, b"x-request-id")
        assert head.startswith(b"HTTP/1.1 200") and echoed != b"trace-" and len(echoed) == 32  # replaced
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: gateway\r\nX-Long: " + b"v" * 70_000 + b"\r\n\r\n")
        sock.settimeout(5.0)
        answer = b""
        while part := sock.recv(65536):
            answer += part
        assert answer.startswith(b"HTTP/1.1 400")


def _data_segments_received(sock: socket.socket) -> int:
    # Linux's struct tcp_info: tcpi_data_segs_in, the segments that carried data, is at byte 152.
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 152)[0]


@pytest.mark.parametrize("instance", [{}], indirect=True)
def test_a_response_head_and_its_body_arrive_in_one_segment(instance):
    _, port = instance
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEALTH)
        _response(sock)  # the first request of a connection: nothing more to learn from it
        before = _data_segments_received(sock)
        sock.sendall(HEALTH)
        head, body = _response(sock)
        assert head.startswith(b"HTTP/1.1 200") and body
        assert _data_segments_received(sock) - before == 1  # pywsgi alone writes the head, then the body


def test_no_access_record_is_built_when_gunicorn_has_no_access_log():
    # With an access log configured, gunicorn's record is written (test above); without one, it is not
    # even built: building it was 2.6 % of a proxied call's CPU.
    from types import SimpleNamespace

    from gevent_worker.serving import KeepAliveHandler

    def record(*args):
        raise AssertionError("an access record was built")

    handler = KeepAliveHandler.__new__(KeepAliveHandler)  # no connection needed to log
    handler.server = SimpleNamespace(log=SimpleNamespace(access_log_enabled=False, access=record))
    handler.log_request()
    handler.server.log.access_log_enabled = True
    with pytest.raises(AssertionError, match="record was built"):
        handler.log_request()


class _PartialSocket:
    """A client socket whose send() takes at most `room` bytes, or fails as a departed client's does."""

    def __init__(self, room: int, error: OSError | None = None) -> None:
        self.room, self.error = room, error
        self.received = bytearray()
        self.sendall_calls = 0

    def send(self, data) -> int:
        if self.error is not None:
            raise self.error
        taken = bytes(data[: self.room])
        self.received += taken
        return len(taken)

    def sendall(self, data) -> None:
        self.sendall_calls += 1
        if self.error is not None:
            raise self.error
        self.received += bytes(data)


def _writing_handler(sock: _PartialSocket):
    from gevent_worker.serving import KeepAliveHandler

    handler = KeepAliveHandler.__new__(KeepAliveHandler)  # no connection needed to write
    handler.socket, handler.response_length, handler.code = sock, 0, 200
    return handler


def test_a_write_is_one_send_and_what_it_did_not_take_follows_whole():
    # gevent's sendall() costs a system call and a deadline per write; one send() usually takes a chunk.
    whole = _PartialSocket(room=1 << 20)
    handler = _writing_handler(whole)
    handler._sendall(b"data: chunk\n\n")
    assert whole.received == b"data: chunk\n\n" and whole.sendall_calls == 0
    assert handler.response_length == len(b"data: chunk\n\n")

    partial = _PartialSocket(room=3)
    handler = _writing_handler(partial)
    handler._sendall(bytearray(b"0123456789"))
    assert partial.received == b"0123456789" and partial.sendall_calls == 1
    assert handler.response_length == 10


def test_a_write_to_a_departed_client_fails_as_pywsgi_reports_it():
    gone = _PartialSocket(room=0, error=BrokenPipeError(32, "Broken pipe"))
    handler = _writing_handler(gone)
    with pytest.raises(BrokenPipeError):
        handler._sendall(b"data: chunk\n\n")
    assert handler.code == -200 and handler.status.startswith("socket error")
    assert handler.response_length == 0
