"""Send an adapter's HttpRequest to a provider with the shared pooled client; map failures to ProviderError.

Provider base URLs are operator configuration and trusted, so this client has no egress guard; every URL
that comes from a request goes through app/utils/egress_guard.py instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from app.errors import ProviderError
from app.providers.base import HttpRequest, ProviderAdapter

MAX_ERROR_BODY = 64 * 1024  # an error page is read only this far before it is classified


def build_provider_client(connect_timeout: float, max_connections: int = 1000) -> httpx.Client:
    """One client per worker process, reused by every request: connections stay pooled and warm."""
    return httpx.Client(
        timeout=httpx.Timeout(connect=connect_timeout, read=600.0, write=30.0, pool=connect_timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 4),
        follow_redirects=False,
        trust_env=False,  # proxies for provider calls are configured explicitly, never picked up by accident
    )


def open_response(
    client: httpx.Client,
    adapter: ProviderAdapter,
    request: HttpRequest,
    *,
    read_timeout: float,
) -> httpx.Response:
    """Send and return the open (streaming) response; an error status is read, classified and raised."""
    provider = adapter.settings.name
    timeout = httpx.Timeout(
        connect=client.timeout.connect,
        read=read_timeout,
        write=client.timeout.write,
        pool=client.timeout.pool,
    )
    built = client.build_request(
        request.method, request.url, headers=request.headers, json=request.json, timeout=timeout
    )
    try:
        response = client.send(built, stream=True)
    except httpx.TimeoutException:
        raise ProviderError(f"{provider} did not answer in time", kind="timeout", provider=provider) from None
    except httpx.HTTPError:
        raise ProviderError(f"{provider} could not be reached", kind="server", provider=provider) from None
    if response.status_code >= 400:
        try:
            body = _read_bounded(response)
        finally:
            response.close()
        raise adapter.parse_error(response.status_code, body, response.headers)
    return response


def _read_bounded(response: httpx.Response) -> bytes:
    body = bytearray()
    try:
        for part in response.iter_bytes():
            body.extend(part)
            if len(body) >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # a broken error body is still an error; classify by status
    return bytes(body[:MAX_ERROR_BODY])


def read_json(response: httpx.Response, provider: str) -> object:
    try:
        response.read()
        return response.json()
    except httpx.TimeoutException:
        raise ProviderError(f"{provider} did not answer in time", kind="timeout", provider=provider) from None
    except httpx.HTTPError:
        raise ProviderError(f"{provider} broke off its answer", kind="server", provider=provider) from None
    except ValueError:
        raise ProviderError(
            f"{provider} answered with invalid JSON", kind="server", provider=provider
        ) from None
    finally:
        response.close()


def iter_lines(response: httpx.Response, provider: str) -> Iterator[str]:
    """The body's lines; a connection that breaks mid-stream becomes stream_interrupted."""
    try:
        yield from response.iter_lines()
    except httpx.TimeoutException:
        raise ProviderError(
            f"the stream from {provider} stalled", kind="timeout", provider=provider
        ) from None
    except httpx.HTTPError:
        raise ProviderError(
            f"the stream from {provider} was cut", kind="stream_interrupted", provider=provider
        ) from None
