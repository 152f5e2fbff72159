"""Meter LLM calls: reserve against the caller's limits, then record one usage row when the call ends.

A `Meter` is begun before the provider is called (the limit check happens there) and finished exactly
once: with the response's usage, with the error that ended it, or, for a stream, when the stream ends
(finished, failed, or the client went away). A stream that ends early is recorded with the tokens seen
so far: the provider's usage when it sent one, else an estimate from the text relayed, marked as
estimated. Failed calls are recorded as failed, with no completion billed. Rows go to the app's
"usage_writer" (a StreamWriter through Redis, else a BatchWriter), so the request path never waits on
an INSERT; with Redis a row outlives the process once `finish` has returned.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from flask import current_app, g

from app.errors import ApiError, ProviderError
from app.middleware.auth_middleware import current_identity
from app.models.user import utcnow
from app.services import prices
from app.services.gateway.catalog import ModelEntry
from app.services.gateway.streaming import HEARTBEAT
from app.services.limits import LimitService, Reservation

logger = logging.getLogger(__name__)

ENDPOINTS = ("chat", "stream", "embeddings", "compare")


def estimate_tokens(text: str) -> int:
    """A typical count (about four characters a token), for providers that report no usage."""
    return math.ceil(len(text) / 4) if text else 0


def reserve_prompt_tokens(encoded_payload: bytes) -> int:
    """An upper estimate of a prompt's tokens: one per two bytes of its JSON (see limits.py)."""
    return math.ceil(len(encoded_payload) / 2) + 8


@dataclass
class CallInfo:
    user_id: int
    api_key_id: int | None
    request_id: str | None
    endpoint: str
    model: str
    provider: str | None
    upstream_model: str | None
    entry: ModelEntry | None
    listed: bool = False  # a name from the catalog (configured), not one made up as "provider/model"


class Meter:
    """One call's measurements; `finish` writes its row and settles its reservation, once."""

    def __init__(self, app: Any, info: CallInfo, reservation: Reservation | None) -> None:
        self.app = app
        self.info = info
        self.reservation = reservation
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.usage: dict[str, Any] | None = None
        self.text_seen = 0
        self.prompt_estimate = 0  # typical prompt tokens, used only when the provider reports none
        self.route: Any = None  # the router's RouteInfo, when the gateway reports one
        self._done = False
        self._lock = threading.Lock()
        self._in_flight_labels = self._labels()
        metrics = app.extensions.get("metrics")
        if metrics is not None:
            metrics.child(metrics.llm_in_flight, *self._in_flight_labels).inc()

    def served_by(self, route: Any) -> None:
        """Take the provider and upstream model from the router's account of who served the call.

        Duck-typed on `provider`, `upstream_model`, `attempts` and `fallback`, so this module does not
        depend on the router's internals; read again at `finish`, as a stream's target is known late.
        """
        self.route = route

    def observe_chunk(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content") or ""
            calls = delta.get("tool_calls") or []
            if (content or calls) and self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.text_seen += len(content) + sum(
                len((call.get("function") or {}).get("arguments") or "") for call in calls
            )

    def finish(
        self,
        status: str,
        *,
        usage: dict[str, Any] | None = None,
        error: BaseException | None = None,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
    ) -> None:
        """Record the call. status: ok, error or client_closed."""
        with self._lock:
            if self._done:
                return
            self._done = True
        if self.route is not None and getattr(self.route, "provider", None):
            self.info.provider = self.route.provider
            self.info.upstream_model = getattr(self.route, "upstream_model", None) or self.info.upstream_model
        usage = usage or self.usage
        estimated = False
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
        elif status == "ok" or self.text_seen:
            # No usage from the provider: estimate, and say so in the row.
            prompt, completion, estimated = self.prompt_estimate, math.ceil(self.text_seen / 4), True
        else:
            prompt = completion = 0  # failed before any output: nothing is billed
        if latency_ms is None:
            latency_ms = (time.perf_counter() - self.started) * 1000
        if ttft_ms is None and self.first_token_at is not None:
            ttft_ms = (self.first_token_at - self.started) * 1000
        entry = self.info.entry
        cost = (
            prices.cost(prices.prices_for(entry, self.info.upstream_model), prompt, completion)
            if entry
            else None
        )
        row = {
            "user_id": self.info.user_id,
            "api_key_id": self.info.api_key_id,
            "request_id": self.info.request_id,
            "endpoint": self.info.endpoint,
            "model": self.info.model,
            "provider": self.info.provider,
            "upstream_model": self.info.upstream_model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "tokens_estimated": estimated,
            "cost_usd": cost,
            "latency_ms": round(latency_ms),
            "time_to_first_token_ms": round(ttft_ms) if ttft_ms is not None else None,
            "status": status,
            "error_code": error_code(error) if error is not None else None,
            "created_at": utcnow(),
        }
        try:
            if self.reservation is not None:
                self.app.extensions["limits"].settle(self.reservation, prompt + completion, cost or 0.0)
        except Exception:  # a Redis hiccup must not lose the row; the reservation then stays counted
            logger.exception("settling a usage reservation failed")
        self.app.extensions["usage_writer"].add(row)
        self._observe(row)

    def _labels(self, status: str | None = None) -> tuple[str, str]:
        # A caller can make up "provider/anything" names: those keep their own label only once a
        # provider has answered for them, so failed made-up names cannot grow the metrics without end.
        listed = self.info.listed or status == "ok"
        return (self.info.provider or "unknown", self.info.model if listed else "other")

    def _observe(self, row: dict[str, Any]) -> None:
        metrics = self.app.extensions.get("metrics")
        if metrics is None:
            return
        labels = self._labels(row["status"])
        metrics.child(metrics.llm_in_flight, *self._in_flight_labels).dec()
        attempts = len(getattr(self.route, "attempts", None) or ())
        if attempts > 1:
            metrics.child(metrics.llm_retries, *labels).inc(attempts - 1)
        if getattr(self.route, "fallback", False):
            metrics.child(metrics.llm_fallbacks, *labels).inc()
        metrics.child(metrics.llm_requests, *labels, row["status"]).inc()
        if row["error_code"]:
            metrics.child(metrics.llm_errors, *labels, row["error_code"]).inc()
        metrics.child(metrics.llm_tokens, *labels, "prompt").inc(row["prompt_tokens"])
        metrics.child(metrics.llm_tokens, *labels, "completion").inc(row["completion_tokens"])
        if row["cost_usd"]:
            metrics.child(metrics.llm_cost, *labels).inc(row["cost_usd"])
        metrics.child(metrics.llm_latency, *labels).observe(row["latency_ms"] / 1000)
        if row["time_to_first_token_ms"] is not None:
            metrics.child(metrics.llm_ttft, *labels).observe(row["time_to_first_token_ms"] / 1000)


def error_code(error: BaseException) -> str:
    """The class of a failure: a provider error's kind (timeout, rate_limit, ...), else our code."""
    if isinstance(error, ProviderError):
        return error.kind
    if isinstance(error, ApiError):
        return error.code
    return "internal_error"


def begin(
    endpoint: str, model: str, *, prompt_payload: Any, max_tokens: int | None = None, choices: int = 1
) -> Meter:
    """Resolve the model, reserve the call's worst case against the caller's limits, start a meter.

    Raises the catalog's 404 for an unknown model, 429 or 402 past a limit; nothing is recorded then.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    identity = current_identity()
    entry = app.extensions["gateway"].catalog.resolve(model)
    target = entry.targets[0]
    encoded_prompt = orjson.dumps(prompt_payload)
    prompt_tokens = reserve_prompt_tokens(encoded_prompt)
    completion_tokens = 0
    if endpoint != "embeddings":
        completion_tokens = (max_tokens or app.config["LLM_RESERVE_MAX_TOKENS"]) * choices
    worst_cost = prices.cost(prices.worst_prices(entry), prompt_tokens, completion_tokens) or 0.0
    limits: LimitService = app.extensions["limits"]
    reservation = limits.reserve(
        identity.user_id, identity.api_key_id, prompt_tokens + completion_tokens, worst_cost
    )
    info = CallInfo(
        user_id=identity.user_id,
        api_key_id=identity.api_key_id,
        request_id=g.get("request_id"),
        endpoint=endpoint,
        model=model,
        provider=target.provider,
        upstream_model=target.model,
        entry=entry,
        listed=model in app.extensions["gateway"].catalog.models,
    )
    meter = Meter(app, info, reservation)
    meter.prompt_estimate = estimate_tokens(encoded_prompt.decode())
    return meter


def release(meters: list[Meter]) -> None:
    """Give back reservations of meters that never ran (a later one in the batch was refused)."""
    for meter in meters:
        meter._done = True
        if meter.reservation is not None:
            meter.app.extensions["limits"].release(meter.reservation)
        metrics = meter.app.extensions.get("metrics")
        if metrics is not None:
            metrics.child(metrics.llm_in_flight, *meter._in_flight_labels).dec()


def metered_stream(events: Iterator[Any], meter: Meter) -> Iterator[Any]:
    """Pass a gateway stream through, watching its chunks; record when it ends, however it ends."""
    status, failure = "client_closed", None
    if getattr(events, "route", None) is not None:
        meter.served_by(events.route)  # a routed stream names its serving target once it has one
    try:
        for event in events:
            if event is not HEARTBEAT:
                meter.observe_chunk(event)
            yield event
        status = "ok"
    except GeneratorExit:
        raise
    except BaseException as error:
        status, failure = "error", error
        raise
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
        meter.finish(status, error=failure)


def finish_completion(meter: Meter, result: dict[str, Any]) -> None:
    """Record a non-streamed chat or embeddings answer."""
    usage = result.get("usage") if isinstance(result, dict) else None
    if not usage:
        texts = [
            (choice.get("message") or {}).get("content") or ""
            for choice in (result.get("choices") or [] if isinstance(result, dict) else [])
        ]
        meter.text_seen = sum(len(text) for text in texts)
    meter.finish("ok", usage=usage or None)


def finish_compare(meter: Meter, result: dict[str, Any]) -> None:
    """Record one model's part of a compare from the result the gateway built."""
    error = result.get("error")
    failure = ApiError(error["message"], code=error["code"]) if error else None
    if result.get("content"):
        meter.text_seen = len(result["content"])
    meter.finish(
        "error" if error else "ok",
        usage=result.get("usage"),
        error=failure,
        latency_ms=result.get("latency_ms"),
        ttft_ms=result.get("time_to_first_token_ms"),
    )
