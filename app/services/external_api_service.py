"""The external API proxy use case: call a user-given URL with retries, guarded, bounded, hop by hop.

The seam for the route (app/routes/external.py) is small:

    settings = ExternalApiSettings(timeout=..., max_retries=..., policy=EgressPolicy(...), verify=...)
    client = build_client(settings)                 # once per process, after fork; reused by every request
    body = request_model(method).model_validate(json_body)          # app/schemas/external.py
    result = call_external(client, settings, method, body.url, headers=body.headers, params=body.params,
                           payload=body.payload, use_json=body.use_json, timeout=body.timeout,
                           idempotency_key=request.headers.get("Idempotency-Key"), on_finish=queue_audit_row)
    return result.to_response(), 200

`call_external` raises only app.errors classes: BadRequest/ValidationFailed (400), DestinationNotAllowed
(403), UpstreamUnreachable (502), UpstreamTimeout (504), UpstreamResponseTooLarge (502), UpstreamError (502:
the upstream broke off mid-response, sent an undecodable body, or redirected too often). `on_finish` gets one
ExternalCallAudit for every call, failed ones included (outcome = the error code), for the audit row.

Decisions worth knowing:
- Redirects are followed here, not by httpx: each Location goes through EgressPolicy.check_url (a refused
  or non-http(s) hop is 403), 303 (and 301/302 after POST) turn into a body-less GET, 307/308 keep method
  and body, and when the origin changes only headers that cannot carry a credential go on (Accept*,
  Content-Type, User-Agent, Idempotency-Key; app/utils/http_headers.py). Redirect bodies are drained at
  most 64 KiB and half a second, then the connection is closed. Retries restart from the first URL, so a
  POST without Idempotency-Key is retried only on what its first hop said (a refused connect, or a 429/503
  with Retry-After answering the POST itself), never on what a later hop said.
- One deadline covers every attempt, redirect hop, backoff sleep and body read; each socket read gets the
  time left as its timeout, so an upstream trickling bytes forever is cut at the deadline.
- A retry whose wait would end past the deadline is not made: the last answer is returned (or the last
  failure raised) instead of a 504 for time we never spent talking to the upstream.
- Retry-After waits are capped at backoff_cap. `ok` is true for 2xx, as in fetch().
- A JSON `null` payload means "no body".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import idna

from app.errors import (
    ApiError,
    BadRequest,
    DestinationNotAllowed,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    ValidationFailed,
)
from app.services.external_settings import ExternalApiSettings, ExternalCallAudit
from app.utils.http_client import build_http_client, io_deadline
from app.utils.http_headers import cross_origin_headers, header_problem, inbound_headers, outbound_headers
from app.utils.retry_policy import backoff_delay, parse_retry_after
from app.utils.upstream_body import discard_response, read_capped_body, render_body

METHODS = ("GET", "POST", "PUT", "DELETE")
RETRY_STATUSES = frozenset({429, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

Sleep = Callable[[float], None]


@dataclass
class ExternalCallResult:
    """The upstream's final answer, ready for the 200 response, plus the audit fields."""

    status_code: int
    ok: bool
    headers: dict[str, str]
    body: Any
    body_encoding: str | None
    url: str
    attempts: int
    elapsed_ms: int
    bytes_received: int
    method: str
    scheme: str
    host: str
    path: str
    outcome: str

    def to_response(self) -> dict[str, Any]:
        """The JSON body of POST /api/external/<method>'s 200 answer."""
        data: dict[str, Any] = {
            "status_code": self.status_code,
            "ok": self.ok,
            "headers": self.headers,
            "body": self.body,
            "url": self.url,
            "attempts": self.attempts,
            "elapsed_ms": self.elapsed_ms,
        }
        if self.body_encoding:
            data["body_encoding"] = self.body_encoding
        return data


def build_client(settings: ExternalApiSettings) -> httpx.Client:
    """The guarded, pooled client call_external expects; build one per process and reuse it."""
    return build_http_client(settings.policy, verify=settings.verify, user_agent=settings.user_agent)


@dataclass
class _Progress:
    attempts: int = 0
    status_code: int | None = None
    bytes_received: int = 0
    hop: int = 0  # the redirect hop of this attempt sent last: 0 is the caller's own request

    def count(self, size: int) -> None:
        self.bytes_received = size


def call_external(
    client: httpx.Client,
    settings: ExternalApiSettings,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    payload: Any = None,
    use_json: bool = True,
    timeout: float | None = None,
    idempotency_key: str | None = None,
    sleep: Sleep = time.sleep,
    on_finish: Callable[[ExternalCallAudit], None] | None = None,
) -> ExternalCallResult:
    """Send one request to a user-given URL with retries; see the module docstring for the contract."""
    started = time.monotonic()
    progress = _Progress()
    method = method.upper()
    scheme, host, path = _describe(url)

    def audit(outcome: str) -> None:
        if on_finish is not None:
            on_finish(
                ExternalCallAudit(
                    method=method,
                    scheme=scheme,
                    host=host,
                    path=path,
                    outcome=outcome,
                    status_code=progress.status_code,
                    attempts=progress.attempts,
                    elapsed_ms=_ms_since(started),
                    bytes_received=progress.bytes_received,
                )
            )

    try:
        result = _call(
            client,
            settings,
            method,
            url,
            headers=dict(headers or {}),
            params=params,
            payload=payload,
            use_json=use_json,
            timeout=timeout,
            idempotency_key=idempotency_key,
            sleep=sleep,
            started=started,
            progress=progress,
        )
    except ApiError as exc:
        audit(exc.code)
        raise
    result.method, result.scheme, result.host, result.path = method, scheme, host, path
    audit(result.outcome)
    return result


def _call(
    client: httpx.Client,
    settings: ExternalApiSettings,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    params: Mapping[str, Any] | None,
    payload: Any,
    use_json: bool,
    timeout: float | None,
    idempotency_key: str | None,
    sleep: Sleep,
    started: float,
    progress: _Progress,
) -> ExternalCallResult:
    if method not in METHODS:
        raise BadRequest(f"Method must be one of {', '.join(METHODS)}.")
    if timeout is None:
        timeout = settings.timeout
    elif not 0 < timeout <= settings.timeout:
        raise ValidationFailed(details={"timeout": [f"must be above 0 and at most {settings.timeout:g}"]})
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            raise ValidationFailed(details={"headers": [problem]})
    if method == "GET" and payload is not None:
        raise ValidationFailed(details={"payload": ["a GET request takes no payload"]})

    target = settings.policy.check_url(url)
    if params:
        target = target.copy_merge_params(_query_params(params))
    caller_key = next((v for k, v in headers.items() if k.lower() == "idempotency-key"), None)
    idempotency_key = caller_key or idempotency_key
    out_headers = outbound_headers(headers, user_agent=settings.user_agent)
    if idempotency_key and caller_key is None:
        out_headers["Idempotency-Key"] = idempotency_key
    content, content_type = _encode_payload(payload, use_json)
    if content_type and not any(k.lower() == "content-type" for k in out_headers):
        out_headers["Content-Type"] = content_type
    idempotent = method != "POST" or idempotency_key is not None
    deadline = started + timeout

    while True:
        progress.attempts += 1
        failure: str | None = None
        attempt_deadline = deadline
        if settings.attempt_timeout is not None:
            attempt_deadline = min(deadline, time.monotonic() + settings.attempt_timeout)
        try:
            response = _send_following_redirects(
                client, settings, method, target, out_headers, content, attempt_deadline, progress
            )
        except httpx.ConnectTimeout:
            failure = "connect_timeout"
        except httpx.ConnectError:
            failure = "connect"
        except httpx.TimeoutException:
            failure = "timeout"
        except httpx.LocalProtocolError as exc:
            raise BadRequest(f"The request cannot be sent: {exc}") from None
        except httpx.TransportError:
            failure = "broken"

        # A retry starts over from the first URL, so a POST may be resent only when what we learnt is
        # about the first hop: after POST -> 303 -> GET, a failure or a 503 on the GET says nothing about
        # whether the POST ran (it did: it answered the redirect).
        first_hop = progress.hop == 0
        if failure is not None:
            # Only a failed connect surely never reached the upstream; anything later may have run a POST.
            may_retry = idempotent or (first_hop and failure in ("connect", "connect_timeout"))
            delay = backoff_delay(progress.attempts, base=settings.backoff_base, cap=settings.backoff_cap)
            if may_retry and _can_retry(settings, progress.attempts, delay, deadline):
                sleep(delay)
                continue
            raise _failure_error(failure, deadline)

        progress.status_code = response.status_code
        # Closed on every way out, an exception included: a response left open holds its pooled
        # connection for good, and enough of them exhaust the pool every call shares.
        try:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if idempotent:
                retryable = response.status_code in RETRY_STATUSES or response.status_code == 500
            else:
                # 429/503 with Retry-After: the upstream declined the POST itself, so resending it is safe.
                retryable = first_hop and response.status_code in (429, 503) and retry_after is not None
            if retryable:
                if retry_after is not None:
                    delay = min(retry_after, settings.backoff_cap)
                else:
                    delay = backoff_delay(
                        progress.attempts, base=settings.backoff_base, cap=settings.backoff_cap
                    )
                if _can_retry(settings, progress.attempts, delay, deadline):
                    discard_response(response, deadline)
                    sleep(delay)
                    continue
            raw, decoded = read_capped_body(response, settings.max_response_bytes, deadline, progress.count)
        finally:
            response.close()
        body, body_encoding = render_body(raw, response.headers.get("content-type", ""), decoded)
        return ExternalCallResult(
            status_code=response.status_code,
            ok=200 <= response.status_code < 300,
            headers=inbound_headers(response.headers.multi_items(), decoded=decoded),
            body=body,
            body_encoding=body_encoding,
            url=str(response.url),
            attempts=progress.attempts,
            elapsed_ms=_ms_since(started),
            bytes_received=len(raw),
            method=method,
            scheme="",
            host="",
            path="",
            outcome="success" if 200 <= response.status_code < 300 else "http_error",
        )


def _send_following_redirects(
    client: httpx.Client,
    settings: ExternalApiSettings,
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    content: bytes | None,
    deadline: float,
    progress: _Progress,
) -> httpx.Response:
    """Send, following redirects ourselves so every hop is checked; return the open final response."""
    headers = dict(headers)
    for hop in range(settings.max_redirects + 1):
        progress.hop = hop
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise httpx.TimeoutException("no time left for the next redirect hop")
        request = client.build_request(
            method, url, headers=headers, content=content, timeout=httpx.Timeout(remaining)
        )
        try:
            with io_deadline(deadline):  # httpx.Timeout is per socket read; this bounds them all
                response = client.send(request, stream=True)
        except idna.IDNAError:
            # httpx builds the next request of every redirect, even one it does not follow, and fails on a
            # Location whose "xn--" host decodes to nothing valid (it has closed the response).
            raise DestinationNotAllowed() from None
        location = response.headers.get("location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            return response
        discard_response(response, deadline)
        if hop == settings.max_redirects:
            break
        try:
            next_url = settings.policy.check_url(url.join(location))
        except BadRequest:
            raise DestinationNotAllowed() from None  # a redirect to ftp:, to credentials, to garbage
        except httpx.InvalidURL:
            raise DestinationNotAllowed() from None
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method, content = "GET", None
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        if (next_url.scheme, next_url.raw_host, next_url.port) != (url.scheme, url.raw_host, url.port):
            headers = cross_origin_headers(headers)
        url = next_url
    raise UpstreamError("The upstream redirected too many times.")


def _encode_payload(payload: Any, use_json: bool) -> tuple[bytes | None, str | None]:
    if payload is None:
        return None, None
    if use_json:
        try:
            text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError):
            raise ValidationFailed(details={"payload": ["must be JSON (no NaN or Infinity)"]}) from None
        return text.encode("utf-8"), "application/json"
    if not isinstance(payload, dict):
        raise ValidationFailed(details={"payload": ["with use_json false, the payload must be an object"]})
    pairs = [(name, _scalar_text(item, "payload")) for name, item in _flatten(payload)]
    return urlencode(pairs).encode("ascii"), "application/x-www-form-urlencoded"


def _query_params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Lists become repeated keys; booleans are "true"/"false"."""
    return [(name, _scalar_text(item, "params")) for name, item in _flatten(params)]


def _flatten(fields: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(str(k), item) for k, v in fields.items() for item in (v if isinstance(v, list) else [v])]


def _scalar_text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValidationFailed(details={where: ["values must be strings, numbers, booleans or lists of them"]})


def _can_retry(settings: ExternalApiSettings, attempt: int, delay: float, deadline: float) -> bool:
    return attempt <= settings.max_retries and time.monotonic() + delay < deadline


def _failure_error(failure: str, deadline: float) -> ApiError:
    if failure in ("timeout", "connect_timeout") or time.monotonic() >= deadline:
        return UpstreamTimeout()
    if failure == "connect":
        return UpstreamUnreachable()
    return UpstreamError("The upstream broke off the connection.")


def _describe(url: str) -> tuple[str, str, str]:
    """scheme, host and path (no query, no credentials) of a URL, for the audit row, however bad it is."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower()[:16], (parts.hostname or "")[:255], (parts.path or "/")[:2048]
    except ValueError:
        return "", "", ""


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
