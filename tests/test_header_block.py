"""app/utils/header_block.py gives what http.client.parse_headers gives, for every header block."""

from __future__ import annotations

import email.parser
import http.client
import io
import socket

import pytest
from gevent.pywsgi import OldMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from app.utils import header_block
from app.utils.header_block import MAX_HEADERS, MAX_LINE


def _parse_both(raw: bytes, message_class=http.client.HTTPMessage):
    """(ours, the standard library's), each with what is left unread in the stream after it."""
    results = []
    for parse in (header_block.parse_headers, http.client.parse_headers):
        fp = io.BytesIO(raw)
        message = (
            parse(fp, message_class)
            if parse is header_block.parse_headers
            else parse(fp, _class=message_class)
        )
        results.append((message, fp.read()))
    return results


def _state(message) -> dict:
    """Everything a Message holds; defects compared by kind (they are instances)."""
    state = dict(vars(message))
    state["policy"] = type(state["policy"])
    state["defects"] = [type(defect) for defect in state["defects"]]
    return state


def assert_same(raw: bytes, message_class=http.client.HTTPMessage) -> None:
    (ours, ours_left), (stdlib, stdlib_left) = _parse_both(raw, message_class)
    assert type(ours) is type(stdlib)
    assert _state(ours) == _state(stdlib)
    assert ours_left == stdlib_left


BLOCKS = [
    # The common shapes: a provider's answer, a client's request, repeated names, odd spacing.
    b"Content-Type: application/json\r\nContent-Length: 294\r\nDate: Thu, 03 Dec 2026 17:25:39 GMT\r\n\r\nbody",
    b"Host: 127.0.0.1:5000\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\n\r\n",
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nx-ratelimit-remaining-requests: 9999\r\n\r\n",
    b"A:b\r\nB:\t value with trailing spaces   \r\nC:\r\nD: \r\n\r\n",
    b"A: b\nB: c\n\n",  # bare LF line ends
    b"\r\n",  # no headers at all
    b"",  # EOF before anything
    b"A: b\r\n",  # EOF before the blank line
    b"A: caf\xe9 \xff\r\n\r\n",  # latin-1 bytes in a value
    # What the email parser treats specially: these take its path, and must still come out the same.
    b"A: b\r\n  folded onto the next line\r\nC: d\r\n\r\n",
    b"A: b\r\n\tfolded with a tab\r\n\r\n",
    b"  leading whitespace first\r\nA: b\r\n\r\n",
    b"not a header line\r\nA: b\r\n\r\n",
    b"A: b\r\nnot a header line\r\nC: d\r\n\r\n",
    b": no name\r\nA: b\r\n\r\n",
    b"Bad Name: has a space\r\n\r\n",
    b"A: b\rC: d\r\n\r\n",  # a stray CR splits a line for the email parser
    b"From someone@example.com\r\nA: b\r\n\r\n",
    b"A: b\r\nFrom: x\r\n\r\n",
    b"A: b\x00c\r\n\x7fName: v\r\n\r\n",
    b"A: b",  # no line end at all
]


@pytest.mark.parametrize("raw", BLOCKS)
def test_the_message_is_the_standard_librarys(raw):
    assert_same(raw)


@pytest.mark.parametrize("raw", BLOCKS[:3] + BLOCKS[9:12])
def test_the_message_class_is_kept(raw):
    # gevent's server asks for its own subclass (with `status`, `getheader`, `typeheader`).
    assert_same(raw, OldMessage)
    assert isinstance(header_block.parse_headers(io.BytesIO(raw), OldMessage), OldMessage)


def test_the_limits_are_http_clients():
    line = b"A: " + b"x" * MAX_LINE + b"\r\n\r\n"
    for parse in (header_block.parse_headers, http.client.parse_headers):
        with pytest.raises(http.client.LineTooLong):
            parse(io.BytesIO(line))
    many = b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    for parse in (header_block.parse_headers, http.client.parse_headers):
        with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
            parse(io.BytesIO(many))
    assert_same(b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS - 1)) + b"\r\n")


_line = st.one_of(
    st.tuples(st.from_regex(rb"[!-9;-~]{1,12}", fullmatch=True), st.binary(max_size=12)).map(
        lambda pair: pair[0] + b":" + pair[1]
    ),
    st.binary(max_size=16),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_line, max_size=6), st.sampled_from([b"\r\n", b"\n"]), st.binary(max_size=8))
def test_any_block_comes_out_the_same(lines, newline, rest):
    assert_same(b"".join(line.replace(b"\n", b"") + newline for line in lines) + newline + rest)


def _RawSocket(raw: bytes) -> socket.socket:
    """A socket that reads `raw` and then its end (the provider client's response reads the socket itself)."""
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(raw)
    return ours


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: nonsense\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n  folded: yes\r\n\r\nhello",
    b"HTTP/1.1 200\r\nContent-Length: -1\r\n\r\n",
]


@pytest.mark.parametrize("raw", RESPONSES)
def test_the_provider_clients_response_reads_as_http_clients(raw):
    from app.services.gateway.upstream import _Response

    answers = []
    for response_class in (_Response, http.client.HTTPResponse):
        with _RawSocket(raw) as sock:
            response = response_class(sock, method="GET")
            response.begin()
            fields = ("status", "reason", "version", "chunked", "chunk_left", "length", "will_close")
            answers.append(
                ({name: getattr(response, name) for name in fields}, response.getheaders(), response.read())
            )
            response.close()
    assert answers[0] == answers[1]


def test_the_server_and_the_provider_client_read_common_headers_without_the_email_package(monkeypatch):
    from app.services.gateway.upstream import _Response
    from gevent_worker.serving import KeepAliveHandler

    def refuse(*args, **kwargs):
        raise AssertionError("the email package's parser was used")

    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    request = KeepAliveHandler.MessageClass(None, io.BytesIO(b"Host: gateway\r\nContent-Length: 2\r\n\r\n"))
    assert (
        isinstance(request, OldMessage) and request.getheader("content-length") == "2" and not request.status
    )
    with _RawSocket(RESPONSES[0]) as sock:
        response = _Response(sock, method="POST")
        response.begin()
        assert response.length == 2 and response.read() == b"{}"
        response.close()
    with pytest.raises(AssertionError, match="email package"):  # folded lines still take its path
        header_block.parse_headers(io.BytesIO(b"A: b\r\n c\r\n\r\n"))
