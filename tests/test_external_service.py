"""call_external against real loopback upstreams: methods, retries, guard, redirects, hygiene, caps, TLS."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpcore
import httpx
import orjson
import pytest
import trustme
from werkzeug.wrappers import Request, Response

from app.errors import (
    DestinationNotAllowed,
    UpstreamError,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnreachable,
    ValidationFailed,
)
from app.services.external_api_service import (
    ExternalApiSettings,
    ExternalCallAudit,
    build_client,
    call_external,
)
from app.utils.capped_body import BodyTooLarge, CappedDecoder
from app.utils.egress_guard import EgressPolicy
from app.utils.http_client import GuardedBackend, build_http_client
from app.utils.retry_policy import backoff_delay, parse_retry_after
from tests.upstreams.server import Upstream, json_response

LOOPBACK_OK = EgressPolicy(allow_private_networks=("127.0.0.1/32",))


def make_settings(**overrides: Any) -> ExternalApiSettings:
    values: dict[str, Any] = {
        "timeout": 5.0,
        "max_retries": 2,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "policy": LOOPBACK_OK,
    }
    values.update(overrides)
    return ExternalApiSettings(**values)


@pytest.fixture
def settings() -> ExternalApiSettings:
    return make_settings()


@pytest.fixture
def client(settings: ExternalApiSettings) -> Iterator[httpx.Client]:
    with build_client(settings) as c:
        yield c


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


class Sleeps:
    """An injectable sleep that records the waits and does not wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def sequence(*responses: Callable[[], Response]) -> Callable[[Request], Response]:
    """A handler answering with the given responses in turn, then repeating the last."""
    count = {"n": 0}
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            index = min(count["n"], len(responses) - 1)
            count["n"] += 1
        return responses[index]()

    return handler


def status(code: int, headers: dict[str, str] | None = None) -> Callable[[], Response]:
    return lambda: json_response({"status": code}, status=code, headers=headers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Make getaddrinfo answer names from `answers` (one list of IPs per lookup, the last repeats)."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            asked.append(host)
            rounds = answers[host]
            ips = rounds.pop(0) if len(rounds) > 1 else rounds[0]
            return [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in ips
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


# --- methods, bodies, params, response rendering -------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_every_method_reaches_the_upstream(
    method: str, client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    payload = None if method == "GET" else {"name": "ada", "n": [1, 2]}
    result = call_external(client, settings, method.lower(), upstream.url + "/things", payload=payload)
    assert result.status_code == 200 and result.ok is True
    assert result.body == {"ok": True} and result.body_encoding is None
    assert result.attempts == 1
    assert upstream.last.method == method and upstream.last.path == "/things"
    if payload is not None:
        assert upstream.last.json == payload
        assert upstream.last.headers["Content-Type"] == "application/json"
    else:
        assert upstream.last.body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_form_payload(
    method: str, client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    call_external(
        client,
        settings,
        method,
        upstream.url + "/form",
        payload={"a": "x y", "flag": True, "n": 3, "tags": ["p", "q"]},
        use_json=False,
    )
    assert upstream.last.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert upstream.last.body == b"a=x+y&flag=true&n=3&tags=p&tags=q"


def test_form_payload_must_be_flat(
    client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    with pytest.raises(ValidationFailed):
        call_external(client, settings, "POST", upstream.url, payload={"a": {"b": 1}}, use_json=False)
    with pytest.raises(ValidationFailed):
        call_external(client, settings, "POST", upstream.url, payload=[1, 2], use_json=False)
    assert upstream.requests == []


def test_params_are_encoded_and_merged(
    client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    result = call_external(
        client,
        settings,
        "GET",
        upstream.url + "/search?q=first",
        params={"tag": ["a", "b"], "on": True, "off": False, "n": 2, "x": 1.5, "s": "a&b"},
    )
    assert upstream.last.query == "q=first&tag=a&tag=b&on=true&off=false&n=2&x=1.5&s=a%26b"
    assert result.url.endswith("/search?q=first&tag=a&tag=b&on=true&off=false&n=2&x=1.5&s=a%26b")


def test_payload_on_get_is_refused(
    client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    with pytest.raises(ValidationFailed):
        call_external(client, settings, "GET", upstream.url, payload={"a": 1})
    assert upstream.requests == []


def test_timeout_above_the_limit_is_refused(
    client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    with pytest.raises(ValidationFailed):
        call_external(client, settings, "GET", upstream.url, timeout=settings.timeout + 1)
    with pytest.raises(ValidationFailed):
        call_external(client, settings, "GET", upstream.url, timeout=0)


@pytest.mark.parametrize(
    ("body", "content_type", "expected", "encoding"),
    [
        (b'{"a": [1, 2]}', "application/json", {"a": [1, 2]}, None),
        (b'{"a": 1}', "application/problem+json", {"a": 1}, None),
        (b"not json", "application/json", "not json", None),
        (b"hello", "text/plain; charset=utf-8", "hello", None),
        ("caf\u00e9".encode("latin-1"), "text/plain; charset=latin-1", "caf\u00e9", None),
        (b"<a/>", "application/xml", "<a/>", None),
        (b"\x89PNG\r\n\x1a\n\x00\x01", "image/png", "iVBORw0KGgoAAQ==", "base64"),
        (b"\xff\xfe\x00", "text/plain; charset=utf-8", "//4A", "base64"),
        (b"", "application/json", "", None),
        # valid JSON that orjson cannot write back (or json.loads cannot nest): handed back as text
        pytest.param(
            b'{"id": 18446744073709551616}',
            "application/json",
            '{"id": 18446744073709551616}',
            None,
            id="bigint",
        ),
        pytest.param(b"[" * 300 + b"]" * 300, "application/json", "[" * 300 + "]" * 300, None, id="deep"),
        pytest.param(
            b"[" * 100_000 + b"]" * 100_000,
            "application/json",
            "[" * 100_000 + "]" * 100_000,
            None,
            id="deeper",
        ),
    ],
)
def test_body_rendering(
    body: bytes,
    content_type: str,
    expected: Any,
    encoding: str | None,
    client: httpx.Client,
    settings: ExternalApiSettings,
) -> None:
    with Upstream(lambda r: Response(body, content_type=content_type)) as up:
        result = call_external(client, settings, "GET", up.url)
    assert result.body == expected
    assert result.body_encoding == encoding
    data = result.to_response()
    assert ("body_encoding" in data) == (encoding is not None)
    orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)  # as app/json_provider.py will write it


def test_upstream_error_status_is_an_answer_not_an_error(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    audits: list[ExternalCallAudit] = []
    with Upstream(lambda r: json_response({"error": "nope"}, status=404)) as up:
        result = call_external(client, settings, "GET", up.url + "/a/b?secret=1", on_finish=audits.append)
    assert result.status_code == 404 and result.ok is False and result.body == {"error": "nope"}
    assert result.outcome == "http_error" and result.path == "/a/b" and result.host == "127.0.0.1"
    assert [a.outcome for a in audits] == ["http_error"]
    assert audits[0].path == "/a/b" and audits[0].status_code == 404 and audits[0].scheme == "http"


def test_the_pool_is_guarded_and_reused(settings: ExternalApiSettings, upstream: Upstream) -> None:
    client = build_client(settings)
    transport = client._transport
    pool = transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool, httpcore.ConnectionPool)
    assert isinstance(pool._network_backend, GuardedBackend)
    for _ in range(3):
        assert call_external(client, settings, "GET", upstream.url).status_code == 200
    assert client._transport is transport
    client.close()


def test_one_client_serves_many_threads(client: httpx.Client, settings: ExternalApiSettings) -> None:
    def handler(request: Request) -> Response:
        time.sleep(0.05)
        return json_response({"n": request.args["n"]})

    results: dict[int, Any] = {}

    def work(n: int) -> None:
        results[n] = call_external(client, settings, "GET", up.url, params={"n": n}).body

    with Upstream(handler) as up:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert results == {n: {"n": str(n)} for n in range(20)}


# --- retries --------------------------------------------------------------------------------------


def test_retries_until_success(client: httpx.Client, settings: ExternalApiSettings) -> None:
    sleeps = Sleeps()
    with Upstream(sequence(status(503), status(503), status(200))) as up:
        result = call_external(client, settings, "GET", up.url, sleep=sleeps)
        assert len(up.requests) == 3
    assert result.status_code == 200 and result.attempts == 3
    assert len(sleeps.calls) == 2
    # full jitter: each wait within [0, min(cap, base * 2^(n-1))]
    assert 0 <= sleeps.calls[0] <= 0.01 and 0 <= sleeps.calls[1] <= 0.02


def test_retries_exhausted_returns_the_last_answer(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    with Upstream(sequence(status(502))) as up:
        result = call_external(client, settings, "PUT", up.url, payload={"a": 1}, sleep=Sleeps())
        assert len(up.requests) == 3
    assert result.status_code == 502 and result.attempts == 3 == 1 + settings.max_retries
    assert all(r.json == {"a": 1} for r in up.requests)


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_get_retries_these_statuses(code: int, client: httpx.Client, settings: ExternalApiSettings) -> None:
    with Upstream(sequence(status(code), status(200))) as up:
        result = call_external(client, settings, "GET", up.url, sleep=Sleeps())
    assert result.attempts == 2 and result.status_code == 200


@pytest.mark.parametrize("code", [400, 401, 404, 501])
def test_other_statuses_are_not_retried(
    code: int, client: httpx.Client, settings: ExternalApiSettings
) -> None:
    with Upstream(sequence(status(code), status(200))) as up:
        result = call_external(client, settings, "GET", up.url, sleep=Sleeps())
    assert result.attempts == 1 and result.status_code == code


def test_retry_after_seconds_is_honoured_and_capped(client: httpx.Client) -> None:
    settings = make_settings(backoff_cap=3.0)
    sleeps = Sleeps()
    with Upstream(
        sequence(status(429, {"Retry-After": "2"}), status(503, {"Retry-After": "100"}), status(200))
    ) as up:
        result = call_external(client, settings, "GET", up.url, sleep=sleeps, timeout=5.0)
    assert result.attempts == 3
    assert sleeps.calls == [2.0, 3.0]


def test_a_response_is_closed_when_handling_it_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # One pooled connection: a response left open would make the second call wait for the pool.
    settings = make_settings(timeout=1.0)
    with (
        build_http_client(settings.policy, limits=httpx.Limits(max_connections=1)) as client,
        Upstream(sequence(status(503, {"Retry-After": "\u00b2"}), status(200))) as up,
    ):

        def broken(value: str | None) -> float | None:
            raise RuntimeError("unexpected")

        monkeypatch.setattr("app.services.external_api_service.parse_retry_after", broken)
        with pytest.raises(RuntimeError):
            call_external(client, settings, "GET", up.url, sleep=Sleeps())
        monkeypatch.undo()
        assert call_external(client, settings, "GET", up.url, sleep=Sleeps()).status_code == 200


def test_a_non_ascii_digit_retry_after_is_ignored(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    with Upstream(sequence(status(503, {"Retry-After": "\u00b2"}))) as up:
        post = call_external(client, settings, "POST", up.url, payload={}, sleep=Sleeps())
        get = call_external(client, settings, "GET", up.url, sleep=Sleeps())
    assert (post.status_code, post.attempts) == (503, 1)  # no usable Retry-After: a POST is not resent
    assert (get.status_code, get.attempts) == (503, 3)  # a GET is retried with backoff as for a bare 503


def test_retry_after_http_date(client: httpx.Client) -> None:
    settings = make_settings(backoff_cap=4.0)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    sleeps = Sleeps()
    with Upstream(sequence(status(503, {"Retry-After": when}), status(200))) as up:
        result = call_external(client, settings, "GET", up.url, sleep=sleeps)
    assert result.attempts == 2
    assert 1.0 <= sleeps.calls[0] <= 3.0


def test_retry_after_with_a_real_wait(client: httpx.Client) -> None:
    settings = make_settings(backoff_cap=0.3)
    with Upstream(sequence(status(503, {"Retry-After": "5"}), status(200))) as up:
        started = time.monotonic()
        result = call_external(client, settings, "GET", up.url)
        waited = time.monotonic() - started
    assert result.attempts == 2
    assert 0.3 <= waited < 2.0


def test_post_is_not_retried_on_500_or_bare_503(client: httpx.Client, settings: ExternalApiSettings) -> None:
    for first in (500, 502, 503, 504, 429):
        with Upstream(sequence(status(first), status(200))) as up:
            result = call_external(client, settings, "POST", up.url, payload={"n": 1}, sleep=Sleeps())
            assert len(up.requests) == 1
        assert result.status_code == first and result.attempts == 1


def test_post_is_retried_on_503_with_retry_after(client: httpx.Client, settings: ExternalApiSettings) -> None:
    with Upstream(sequence(status(503, {"Retry-After": "0"}), status(200))) as up:
        result = call_external(client, settings, "POST", up.url, payload={"n": 1}, sleep=Sleeps())
    assert result.attempts == 2 and result.status_code == 200


def test_post_with_idempotency_key_is_retried_like_put(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    with Upstream(sequence(status(500), status(502), status(201))) as up:
        result = call_external(
            client, settings, "POST", up.url, payload={"n": 1}, idempotency_key="k-123", sleep=Sleeps()
        )
        assert [r.headers.get("Idempotency-Key") for r in up.requests] == ["k-123"] * 3
    assert result.attempts == 3 and result.status_code == 201


def test_idempotency_key_in_the_headers_counts_too(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    with Upstream(sequence(status(500), status(200))) as up:
        result = call_external(
            client, settings, "POST", up.url, headers={"idempotency-key": "abc"}, payload={}, sleep=Sleeps()
        )
        assert up.last.headers["Idempotency-Key"] == "abc"
    assert result.attempts == 2


@pytest.mark.parametrize("next_hop", ["refused", "busy"])
def test_post_is_not_resent_when_a_later_redirect_hop_fails(
    next_hop: str, client: httpx.Client, settings: ExternalApiSettings
) -> None:
    # POST -> 303 -> GET: the POST ran; a refused connect or a 503 on the GET must not resend it.
    location = f"http://127.0.0.1:{free_port()}/orders/1" if next_hop == "refused" else "/orders/1"

    def handler(request: Request) -> Response:
        if request.method == "GET":
            return json_response({}, status=503, headers={"Retry-After": "0"})
        return Response(b"", status=303, headers={"Location": location})

    with Upstream(handler) as up:
        if next_hop == "refused":
            with pytest.raises(UpstreamUnreachable):
                call_external(client, settings, "POST", up.url + "/orders", payload={}, sleep=Sleeps())
        else:
            result = call_external(client, settings, "POST", up.url + "/orders", payload={}, sleep=Sleeps())
            assert result.status_code == 503 and result.attempts == 1
        assert [r.method for r in up.requests if r.path == "/orders"] == ["POST"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_connection_refused_is_retried_then_unreachable(
    method: str, client: httpx.Client, settings: ExternalApiSettings
) -> None:
    sleeps = Sleeps()
    audits: list[ExternalCallAudit] = []
    with pytest.raises(UpstreamUnreachable):
        call_external(
            client,
            settings,
            method,
            f"http://127.0.0.1:{free_port()}/",
            sleep=sleeps,
            on_finish=audits.append,
        )
    assert len(sleeps.calls) == 2  # connect errors never reached the upstream: even POST is retried
    assert audits[0].outcome == "upstream_unreachable" and audits[0].attempts == 3


def test_a_stalled_get_is_retried_within_the_deadline(client: httpx.Client) -> None:
    settings = make_settings(attempt_timeout=0.3)

    def slow_then_fast() -> Response:
        time.sleep(1.0)
        return json_response({"slow": True})

    with Upstream(sequence(slow_then_fast, status(200))) as up:
        result = call_external(client, settings, "GET", up.url, sleep=Sleeps())
    assert result.attempts == 2 and result.status_code == 200


def test_a_stalled_post_is_not_retried(client: httpx.Client) -> None:
    settings = make_settings(attempt_timeout=0.3)

    def slow() -> Response:
        time.sleep(1.0)
        return json_response({"slow": True})

    with Upstream(sequence(slow, status(200))) as up, pytest.raises(UpstreamTimeout):
        call_external(client, settings, "POST", up.url, payload={}, sleep=Sleeps())
    assert len(up.requests) == 1


def test_one_deadline_covers_all_attempts_and_sleeps(client: httpx.Client) -> None:
    settings = make_settings(max_retries=50, backoff_base=0.2, backoff_cap=0.2, timeout=5.0)

    def slow_503() -> Response:
        time.sleep(0.2)
        return json_response({}, status=503)

    with Upstream(sequence(slow_503)) as up:
        started = time.monotonic()
        try:
            result = call_external(client, settings, "GET", up.url, timeout=1.0)
            assert result.status_code == 503  # the last answer, when no retry fits the deadline
        except UpstreamTimeout:
            pass
        elapsed = time.monotonic() - started
    assert elapsed < 1.4
    assert 2 <= len(up.requests) < 10


def test_a_stalled_upstream_is_cut_at_the_deadline(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    def stall(request: Request) -> Response:
        time.sleep(3)
        return json_response({})

    with Upstream(stall) as up:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            call_external(client, settings, "GET", up.url, timeout=0.5, sleep=Sleeps())
        assert time.monotonic() - started < 1.2


# --- the guard, through the whole client ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://2130706433:{port}/",
        "http://0177.0.0.1:{port}/",
        "http://0x7f.1:{port}/",
        "http://127.1:{port}/",
        "http://localhost:{port}/",
        "http://LOCALHOST.:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
    ],
)
def test_default_policy_refuses_loopback(url: str, upstream: Upstream) -> None:
    settings = make_settings(policy=EgressPolicy())
    audits: list[ExternalCallAudit] = []
    with build_client(settings) as client, pytest.raises(DestinationNotAllowed) as caught:
        call_external(client, settings, "GET", url.format(port=upstream.port), on_finish=audits.append)
    assert caught.value.message == "The destination is not allowed."
    assert upstream.requests == []
    assert audits[0].outcome == "destination_not_allowed"


@pytest.mark.parametrize(
    "ips",
    [
        ["10.0.0.5"],
        ["169.254.169.254"],
        ["100.64.0.1"],
        ["192.168.0.1"],
        ["::1"],
        ["64:ff9b::7f00:1"],
        ["2002:7f00:1::"],
        ["93.184.215.14", "127.0.0.1"],  # one bad answer among good ones refuses the name
    ],
)
def test_names_resolving_to_refused_addresses(ips: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(policy=EgressPolicy())
    dialled: list[str] = []

    class Recorder(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
            dialled.append(host)
            raise httpcore.ConnectError("test: no network")

    asked = fake_dns(monkeypatch, {"internal.example": [ips]})
    with (
        build_http_client(settings.policy, inner_backend=Recorder()) as client,
        pytest.raises(DestinationNotAllowed),
    ):
        call_external(client, settings, "GET", "http://internal.example/meta", sleep=Sleeps())
    assert asked == ["internal.example"] and dialled == []


def test_dns_rebinding_is_refused_on_the_next_connection(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name answers a public address first (served here by loopback), then 127.0.0.1."""
    settings = make_settings(policy=EgressPolicy())
    dialled: list[str] = []

    class PublicIsLoopback(httpcore.SyncBackend):
        # Stands in for the internet: "dialling" the public address reaches our loopback upstream.
        def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
            dialled.append(host)
            return super().connect_tcp("127.0.0.1", port, *args, **kwargs)

    fake_dns(monkeypatch, {"rebind.example": [["93.184.215.14"], ["127.0.0.1"]]})
    url = f"http://rebind.example:{upstream.port}/"
    with build_http_client(settings.policy, inner_backend=PublicIsLoopback()) as client:
        first = call_external(client, settings, "GET", url)
        assert first.status_code == 200
        client._transport._pool.close()  # type: ignore[attr-defined]  # force a fresh connection
        with pytest.raises(DestinationNotAllowed):
            call_external(client, settings, "GET", url)
    assert dialled == ["93.184.215.14"]
    assert len(upstream.requests) == 1
    assert upstream.last.headers["Host"] == f"rebind.example:{upstream.port}"


def test_private_network_exemption_is_exact(upstream: Upstream) -> None:
    settings = make_settings(policy=EgressPolicy(allow_private_networks=("127.0.0.2/32",)))
    with build_client(settings) as client, pytest.raises(DestinationNotAllowed):
        call_external(client, settings, "GET", upstream.url)
    assert upstream.requests == []


def test_disallowed_port(client: httpx.Client) -> None:
    settings = make_settings(
        policy=EgressPolicy(allow_private_networks=("127.0.0.1/32",), allowed_ports=((443, 443),))
    )
    with pytest.raises(DestinationNotAllowed):
        call_external(client, settings, "GET", "http://127.0.0.1:8080/")


# --- redirects ----------------------------------------------------------------------------------------


def redirect(location: str, code: int = 302) -> Callable[[], Response]:
    return lambda: Response(b"", status=code, headers={"Location": location})


def test_redirect_is_followed(client: httpx.Client, settings: ExternalApiSettings) -> None:
    def handler(request: Request) -> Response:
        if request.path == "/start":
            return Response(b"moved", status=302, headers={"Location": "/final?x=1"})
        return json_response({"path": request.path})

    with Upstream(handler) as up:
        result = call_external(client, settings, "GET", up.url + "/start")
    assert result.body == {"path": "/final"} and result.url == up.url + "/final?x=1"
    assert result.attempts == 1


def test_redirect_to_an_internal_address_is_refused(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    port = free_port()
    with Upstream(sequence(redirect(f"http://127.0.0.2:{port}/admin"))) as up:
        with pytest.raises(DestinationNotAllowed):
            call_external(client, settings, "GET", up.url)
        assert len(up.requests) == 1


def test_redirect_to_a_name_of_an_internal_address_is_refused(
    client: httpx.Client, settings: ExternalApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = fake_dns(monkeypatch, {"sneaky.example": [["127.0.0.2"]]})
    with (
        Upstream(sequence(redirect(f"http://sneaky.example:{free_port()}/"))) as up,
        pytest.raises(DestinationNotAllowed),
    ):
        call_external(client, settings, "GET", up.url)
    assert asked == ["sneaky.example"]


def test_redirect_to_an_internationalised_name(
    client: httpx.Client, settings: ExternalApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = fake_dns(monkeypatch, {"xn--bcher-kva.ch": [["127.0.0.1"]]})

    def handler(request: Request) -> Response:
        if request.path == "/start":
            return Response(b"", status=302, headers={"Location": f"http://xn--bcher-kva.ch:{port}/final"})
        if request.path == "/bad":
            return Response(b"", status=302, headers={"Location": f"http://xn--ls8h.la:{port}/"})
        return json_response({"host": request.headers["Host"]})

    with Upstream(handler) as up:
        port = up.port
        result = call_external(client, settings, "GET", up.url + "/start")
        assert result.body == {"host": f"xn--bcher-kva.ch:{port}"} and asked == ["xn--bcher-kva.ch"]
        with pytest.raises(DestinationNotAllowed):
            call_external(client, settings, "GET", up.url + "/bad")


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/", "file:///etc/passwd"])
def test_redirect_to_a_bad_scheme_or_credentials_is_refused(
    location: str, client: httpx.Client, settings: ExternalApiSettings
) -> None:
    with Upstream(sequence(redirect(location))) as up, pytest.raises(DestinationNotAllowed):
        call_external(client, settings, "GET", up.url)


def test_too_many_redirects(client: httpx.Client) -> None:
    settings = make_settings(max_redirects=3)
    with Upstream(sequence(redirect("/again"))) as up:
        with pytest.raises(UpstreamError) as caught:
            call_external(client, settings, "GET", up.url)
        assert len(up.requests) == 4
    assert caught.value.code == "upstream_error"


@pytest.mark.parametrize(
    ("code", "method", "body"), [(303, "GET", b""), (302, "GET", b""), (307, "POST", b'{"a":1}')]
)
def test_redirect_method_rules(
    code: int, method: str, body: bytes, client: httpx.Client, settings: ExternalApiSettings
) -> None:
    def handler(request: Request) -> Response:
        if request.path == "/start":
            return Response(b"", status=code, headers={"Location": "/next"})
        return json_response({})

    with Upstream(handler) as up:
        call_external(client, settings, "POST", up.url + "/start", payload={"a": 1})
        assert up.last.method == method and up.last.body == body
        assert ("Content-Type" in up.last.headers) == bool(body)


def test_cross_origin_redirect_forwards_no_credential(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    with Upstream() as other:

        def handler(request: Request) -> Response:
            if request.path == "/same":
                return Response(b"", status=307, headers={"Location": "/same2"})
            if request.path == "/same2":
                return Response(b"", status=307, headers={"Location": other.url + "/away"})
            return json_response({})

        with Upstream(handler) as up:
            headers = {
                "Authorization": "Bearer upstream-token",
                "Cookie": "s=1",
                "X-API-Key": "tu-api-key",  # the contract's own example: any name can hold a credential
                "Accept": "application/json",
                "Accept-Language": "es",
            }
            result = call_external(
                client,
                settings,
                "POST",
                up.url + "/same",
                headers=headers,
                payload={"a": 1},
                idempotency_key="k1",
            )
            same = {k.lower(): v for k, v in up.last.headers.items()}
            assert up.last.path == "/same2"
            assert same["authorization"] == "Bearer upstream-token" and same["x-api-key"] == "tu-api-key"
        assert result.url == other.url + "/away"
        away = {k.lower(): v for k, v in other.last.headers.items()}
        for name in ("authorization", "cookie", "x-api-key"):
            assert name not in away
        assert away["accept"] == "application/json" and away["accept-language"] == "es"
        assert away["content-type"] == "application/json" and away["idempotency-key"] == "k1"
        assert away["user-agent"] == "multi-llm-api/0.1" and other.last.json == {"a": 1}  # 307 keeps the body


def test_redirect_body_is_not_drained_without_limit(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"x" * 65536

    def handler(request: Request) -> Response:
        if request.path == "/start":
            return Response(endless(), status=302, headers={"Location": "/final"})
        return json_response({"final": True})

    with Upstream(handler) as up:
        started = time.monotonic()
        result = call_external(client, settings, "GET", up.url + "/start")
    assert result.body == {"final": True}
    assert time.monotonic() - started < 2.0


# --- header hygiene ---------------------------------------------------------------------------------


def test_outbound_header_hygiene(
    client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    headers = {
        "Host": "evil.example",
        "Content-Length": "999",
        "Transfer-Encoding": "chunked",
        "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Trailer": "X-T",
        "Upgrade": "websocket",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "User-Agent": "curl/8",
        "Accept-Encoding": "br",
        "Authorization": "Bearer for-the-upstream",
        "X-Custom": "kept",
    }
    call_external(client, settings, "POST", upstream.url, headers=headers, payload={"a": 1})
    seen = {k.lower(): v for k, v in upstream.last.headers.items()}
    assert seen["host"] == f"127.0.0.1:{upstream.port}"
    assert seen["content-length"] == "7"
    assert seen["user-agent"] == "multi-llm-api/0.1"
    assert seen["accept-encoding"] == "gzip, deflate"
    assert seen["authorization"] == "Bearer for-the-upstream"
    assert seen["x-custom"] == "kept"
    for dropped in (
        "transfer-encoding",
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ):
        assert dropped not in seen
    assert upstream.last.json == {"a": 1}


@pytest.mark.parametrize(
    "headers",
    [{"X-A": "a\r\nX-Injected: 1"}, {"X-A": "a\nb"}, {"X-A": "\u20ac"}, {"Bad Name": "x"}, {"X:A": "x"}],
)
def test_unsendable_headers_are_refused(
    headers: dict[str, str], client: httpx.Client, settings: ExternalApiSettings, upstream: Upstream
) -> None:
    with pytest.raises(ValidationFailed):
        call_external(client, settings, "GET", upstream.url, headers=headers)
    assert upstream.requests == []


def test_inbound_header_hygiene_and_no_shared_cookies(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    def handler(request: Request) -> Response:
        response = json_response({"cookie": request.headers.get("Cookie")})
        response.headers["Set-Cookie"] = "session=secret; Path=/"
        response.headers["Connection"] = "X-Hop"
        response.headers["X-Hop"] = "1"
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = "Basic"
        response.headers.add("X-Multi", "a")
        response.headers.add("X-Multi", "b")
        return response

    with Upstream(handler) as up:
        first = call_external(client, settings, "GET", up.url)
        second = call_external(client, settings, "GET", up.url)
    for name in ("set-cookie", "x-hop", "keep-alive", "connection", "proxy-authenticate", "content-length"):
        assert name not in first.headers
    assert first.headers["x-multi"] == "a, b"
    assert first.headers["content-type"] == "application/json"
    assert second.body == {"cookie": None}


# --- response size and time caps -----------------------------------------------------------------------


def test_response_cap_plain(client: httpx.Client) -> None:
    settings = make_settings(max_response_bytes=1000)
    with Upstream(lambda r: Response(b"x" * 1000)) as up:
        assert len(call_external(client, settings, "GET", up.url).body) == 1000
    with Upstream(lambda r: Response(b"x" * 1001)) as up, pytest.raises(UpstreamResponseTooLarge):
        call_external(client, settings, "GET", up.url)


def test_response_cap_streamed_without_length(client: httpx.Client) -> None:
    settings = make_settings(max_response_bytes=100_000)
    produced = {"bytes": 0}

    def endless() -> Iterator[bytes]:
        while True:
            produced["bytes"] += 16384
            yield b"y" * 16384

    with (
        Upstream(lambda r: Response(endless(), content_type="text/plain")) as up,
        pytest.raises(UpstreamResponseTooLarge),
    ):
        call_external(client, settings, "GET", up.url)
    assert produced["bytes"] < 10_000_000


def test_gzip_body_is_decoded(client: httpx.Client, settings: ExternalApiSettings) -> None:
    body = gzip.compress(b'{"hello": "world"}')
    with Upstream(
        lambda r: Response(body, content_type="application/json", headers={"Content-Encoding": "gzip"})
    ) as up:
        result = call_external(client, settings, "GET", up.url)
    assert result.body == {"hello": "world"}
    assert "content-encoding" not in result.headers
    assert result.bytes_received == len(b'{"hello": "world"}')


def test_gzip_bomb_is_cut_on_decoded_size(client: httpx.Client) -> None:
    settings = make_settings(max_response_bytes=1024 * 1024)
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < settings.max_response_bytes  # the wire size alone would pass
    with Upstream(lambda r: Response(bomb, headers={"Content-Encoding": "gzip"})) as up:
        with pytest.raises(UpstreamResponseTooLarge):
            call_external(client, settings, "GET", up.url)
        assert len(up.requests) == 1


def test_capped_decoder_never_holds_the_inflated_bomb() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    decoder = CappedDecoder("gzip", 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            for i in range(0, len(bomb), 65536):
                decoder.feed(bomb[i : i + 65536])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.total == 1024 * 1024 + 1
    assert peak < 4 * 1024 * 1024  # one 64 KiB chunk of this bomb inflates to 64 MiB without max_length


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "identity"])
def test_capped_decoder_round_trips(encoding: str) -> None:
    data = bytes(range(256)) * 400
    if encoding == "gzip":
        wire = gzip.compress(data)
    elif encoding == "deflate":
        wire = zlib.compress(data)
    elif encoding == "raw-deflate":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        wire = packer.compress(data) + packer.flush()
    else:
        wire = data
    decoder = CappedDecoder("deflate" if encoding == "raw-deflate" else encoding, len(data))
    out = b"".join(decoder.feed(wire[i : i + 1000]) for i in range(0, len(wire), 1000)) + decoder.finish()
    assert out == data
    with pytest.raises(BodyTooLarge):
        small = CappedDecoder("deflate" if encoding == "raw-deflate" else encoding, len(data) - 1)
        for i in range(0, len(wire), 1000):
            small.feed(wire[i : i + 1000])
        small.finish()


def test_unknown_content_encoding_comes_back_raw(client: httpx.Client, settings: ExternalApiSettings) -> None:
    with Upstream(lambda r: Response(b"\x01\x02", headers={"Content-Encoding": "br"})) as up:
        result = call_external(client, settings, "GET", up.url)
    assert result.body_encoding == "base64" and result.body == "AQI="
    assert result.headers["content-encoding"] == "br"


def test_a_trickling_upstream_is_cut_at_the_deadline(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    def trickle() -> Iterator[bytes]:
        while True:
            time.sleep(0.05)
            yield b"."

    with Upstream(lambda r: Response(trickle(), content_type="text/plain")) as up:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            call_external(client, settings, "GET", up.url, timeout=0.8)
        elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 1.3


def test_a_body_stalling_after_the_headers_is_cut_at_the_deadline(
    client: httpx.Client, settings: ExternalApiSettings
) -> None:
    def stall_midway() -> Iterator[bytes]:
        time.sleep(0.4)
        yield b"part"
        time.sleep(3)
        yield b"never"

    with Upstream(lambda r: Response(stall_midway(), content_type="text/plain")) as up:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            call_external(client, settings, "GET", up.url, timeout=0.6)
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.85  # each read gets only the time left, not a fresh full timeout


@contextmanager
def raw_upstream(replies: list[bytes], every: float) -> Iterator[str]:
    """A loopback server that reads a request head, then sends `replies` one by one, `every` seconds apart.

    For what werkzeug cannot send: response headers a line at a time, endless "100 Continue"s.
    """
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            try:
                for reply in replies:
                    conn.sendall(reply)
                    time.sleep(every)
            except OSError:
                pass  # the client gave up: what the tests want

    def accept() -> None:
        with listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()


CHUNK = b"1\r\nx\r\n"


@pytest.mark.parametrize(
    "replies",
    [
        [b"HTTP/1.1 200 OK\r\n"] + [b"X-Slow-%d: 1\r\n" % i for i in range(20)],
        [b"HTTP/1.1 100 Continue\r\n\r\n"] * 20,
        # a chunk each 0.25 s until just before the deadline, then silence (b"" sends nothing)
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + [CHUNK] * 4 + [b""] * 20,
    ],
    ids=["header-lines", "interim-responses", "body-then-stall"],
)
def test_an_upstream_sending_slowly_is_cut_at_the_deadline(
    replies: list[bytes], client: httpx.Client, settings: ExternalApiSettings
) -> None:
    # Each piece arrives within one read timeout: only a deadline over all the reads stops the call.
    with raw_upstream(replies, every=0.25) as url:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            call_external(client, settings, "GET", url, timeout=1.2, sleep=Sleeps())
        elapsed = time.monotonic() - started
    assert elapsed < 1.9  # without the deadline: 5 s of header lines, or the stall's full 1.2 s on top


# --- TLS ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_upstream(ca: trustme.CA) -> Iterator[Upstream]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    with Upstream(lambda r: json_response({"tls": True}), ssl_context=server_context) as up:
        yield up


def test_tls_verified_with_the_configured_ca(ca: trustme.CA, tls_upstream: Upstream) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    settings = make_settings(verify=client_context)
    with build_client(settings) as client:
        by_ip = call_external(client, settings, "GET", tls_upstream.url)
        by_name = call_external(client, settings, "GET", f"https://localhost:{tls_upstream.port}/")
    assert by_ip.body == {"tls": True} and by_name.body == {"tls": True}


def test_tls_with_a_ca_bundle_path(ca: trustme.CA, tls_upstream: Upstream) -> None:
    with ca.cert_pem.tempfile() as bundle:
        settings = make_settings(verify=bundle)
        with build_client(settings) as client:
            assert call_external(client, settings, "GET", tls_upstream.url).status_code == 200


def test_tls_untrusted_certificate_is_refused(tls_upstream: Upstream) -> None:
    settings = make_settings(verify=True)  # system CAs do not know the trustme CA
    with build_client(settings) as client, pytest.raises(UpstreamUnreachable):
        call_external(client, settings, "GET", tls_upstream.url, sleep=Sleeps())
    assert tls_upstream.requests == []


def test_tls_wrong_host_name_is_refused(ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    settings = make_settings(verify=client_context)
    fake_dns(monkeypatch, {"named.example": [["127.0.0.1"]]})
    with Upstream(ssl_context=server_context) as up, build_client(settings) as client:
        with pytest.raises(UpstreamUnreachable):
            call_external(client, settings, "GET", f"https://named.example:{up.port}/", sleep=Sleeps())
        assert up.requests == []


# --- retry timing helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("Wed, 25 Nov 2026 10:00:30 GMT", 30.0),
        ("Wed, 25 Nov 2026 09:59:00 GMT", 0.0),  # in the past: retry now
        ("-1", None),
        ("1.5", None),
        ("\u00b2", None),  # "²": str.isdigit() says yes, float() says no
        ("soon", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


def test_backoff_is_full_jitter_and_capped() -> None:
    for attempt in range(1, 12):
        ceiling = min(4.0, 0.25 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base=0.25, cap=4.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not a constant
