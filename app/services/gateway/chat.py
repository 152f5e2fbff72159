"""The chat, embeddings and compare use cases: resolve the model, call its provider, translate back."""

from __future__ import annotations

import base64
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app.errors import ApiError, Forbidden, ProviderError
from app.providers.aggregate import collect_completion
from app.services import prices
from app.services.gateway.catalog import Catalog, ModelEntry, Provider, Target
from app.services.gateway.recovery import RoutedStream
from app.services.gateway.router import Attempt, RouteInfo, RoutePlan, Router, default_router
from app.services.gateway.streaming import HEARTBEAT, relay
from app.services.gateway.upstream import (
    ProviderClient,
    close,
    interrupt,
    iter_lines,
    open_response,
    read_json,
    recycle,
)


@dataclass(frozen=True)
class Timeouts:
    request: float  # a whole non-streaming answer
    first_chunk: float  # LLM_FIRST_TOKEN_TIMEOUT
    stream_idle: float  # LLM_STREAM_IDLE_TIMEOUT
    heartbeat: float


class Gateway:
    """One per process: the catalog, the router, the pooled provider client and the timeouts."""

    def __init__(
        self, catalog: Catalog, client: ProviderClient, timeouts: Timeouts, router: Router | None = None
    ) -> None:
        self.catalog = catalog
        self.client = client
        self.timeouts = timeouts
        self.router = router or default_router(catalog, budget=timeouts.request)

    def resolve(self, model: str, allowed_models: Sequence[str] | None) -> ModelEntry:
        """The catalog entry for a public model name the caller may use."""
        entry = self.catalog.resolve(model)
        if allowed_models is not None and model not in allowed_models:
            raise Forbidden(f"This API key may not use the model '{model}'.", code="model_not_allowed")
        return entry

    def route(self, model: str, allowed_models: Sequence[str] | None) -> tuple[ModelEntry, Target, Provider]:
        """The entry and its first configured target (the router may pick another per request)."""
        entry = self.resolve(model, allowed_models)
        target = entry.targets[0]
        return entry, target, self.catalog.provider(target.provider)

    def complete(self, chat: dict[str, Any], allowed_models: Sequence[str] | None = None) -> dict[str, Any]:
        return self.complete_routed(chat, allowed_models)[0]

    def complete_routed(
        self, chat: dict[str, Any], allowed_models: Sequence[str] | None = None
    ) -> tuple[dict[str, Any], RouteInfo]:
        """The completion, and which targets were tried and which one served it."""
        plan = self.router.plan(self.resolve(chat["model"], allowed_models))
        return _first_success(plan, lambda attempt: self._complete_once(attempt, chat)), plan.info

    def _complete_once(self, attempt: Attempt, chat: dict[str, Any]) -> dict[str, Any]:
        adapter, model = attempt.provider.adapter, attempt.target.model
        if adapter.is_local:
            return collect_completion(adapter.local_stream(chat, model), model)
        request = adapter.chat_request(chat, model, stream=False)
        timeout = attempt.timeout(self.timeouts.request)
        response = open_response(self.client, adapter, request, read_timeout=timeout)
        return adapter.parse_chat(read_json(response, attempt.provider.name), model)

    def stream(self, chat: dict[str, Any], allowed_models: Sequence[str] | None = None) -> RoutedStream:
        """Chunks, with HEARTBEAT markers while the provider is silent; ends only on the provider's end.

        The returned stream's `route` names the serving target once the first chunk has been yielded.
        """
        plan = self.router.plan(self.resolve(chat["model"], allowed_models))
        return RoutedStream(plan, chat, self._stream_once)

    def _stream_once(self, attempt: Attempt, chat: dict[str, Any]) -> Iterator[Any]:
        provider, model = attempt.provider, attempt.target.model
        adapter = provider.adapter
        if adapter.is_local:
            return iter(adapter.local_stream(chat, model))
        request = adapter.chat_request(chat, model, stream=True)
        opened: list[Any] = []
        ended: list[Any] = []  # responses whose stream the provider finished: their connection is kept

        def chunks() -> Iterator[dict[str, Any]]:
            # Opened inside the relay, so waiting for the response headers counts against the first-token
            # deadline too; an error status still surfaces before the first chunk, as an exception.
            response = open_response(self.client, adapter, request, read_timeout=self.timeouts.stream_idle)
            opened.append(response)
            try:
                yield from adapter.parse_stream(iter_lines(response, provider.name), model)
            except BaseException:
                close(response)
                raise
            ended.append(response)

        def close_upstream() -> None:
            for response in opened:
                if response in ended:
                    recycle(response)
                else:
                    close(response)

        def interrupt_upstream() -> bool:
            reading = [response for response in opened if response not in ended]
            for response in reading:
                interrupt(response)
            return bool(reading)

        return relay(
            chunks(),
            provider=provider.name,
            first_chunk_timeout=attempt.timeout(self.timeouts.first_chunk),
            idle_timeout=self.timeouts.stream_idle,
            heartbeat_interval=self.timeouts.heartbeat,
            close_upstream=close_upstream,
            interrupt_upstream=interrupt_upstream,
        )

    def embed(
        self,
        model: str,
        inputs: list[str],
        *,
        dimensions: int | None,
        encoding_format: str | None,
        allowed_models: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        plan = self.router.plan(self.resolve(model, allowed_models))
        result = _first_success(plan, lambda attempt: self._embed_once(attempt, model, inputs, dimensions))
        if encoding_format == "base64":
            # The openai SDK asks for base64 by default: little-endian float32, as OpenAI sends it.
            for item in result["data"]:
                item["embedding"] = base64.b64encode(array("f", item["embedding"]).tobytes()).decode()
        return result

    def _embed_once(
        self, attempt: Attempt, model: str, inputs: list[str], dimensions: int | None
    ) -> dict[str, Any]:
        provider = attempt.provider
        adapter = provider.adapter
        if not adapter.supports_embeddings:
            raise ProviderError(
                f"The model '{model}' does not offer embeddings.",
                kind="invalid_request",
                provider=provider.name,
            )
        request = adapter.embeddings_request(inputs, attempt.target.model, dimensions=dimensions)
        timeout = attempt.timeout(self.timeouts.request)
        response = open_response(self.client, adapter, request, read_timeout=timeout)
        return adapter.parse_embeddings(read_json(response, provider.name), attempt.target.model)

    def compare(
        self, chat: dict[str, Any], models: list[str], allowed_models: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Run one request on every model at once; one model's failure never fails the others."""
        with ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="compare") as pool:
            futures = [
                pool.submit(self._compare_one, {**chat, "model": model}, allowed_models) for model in models
            ]
            return [future.result() for future in futures]

    def _compare_one(self, chat: dict[str, Any], allowed_models: Sequence[str] | None) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any] = {
            "model": chat["model"],
            "content": None,
            "finish_reason": None,
            "usage": None,
            "cost": None,
            "latency_ms": None,
            "time_to_first_token_ms": None,
            "error": None,
        }
        chunks: list[dict[str, Any]] = []
        try:
            entry, _, _ = self.route(chat["model"], allowed_models)
            routed = self.stream(chat, allowed_models)
            for chunk in routed:
                if chunk is HEARTBEAT:
                    continue
                if result["time_to_first_token_ms"] is None and any(
                    (choice.get("delta") or {}).get("content")
                    or (choice.get("delta") or {}).get("tool_calls")
                    for choice in chunk.get("choices") or []
                ):
                    result["time_to_first_token_ms"] = round((time.perf_counter() - started) * 1000, 1)
                chunks.append(chunk)
            completion = collect_completion(chunks, chat["model"])
            choice = completion["choices"][0] if completion["choices"] else {}
            message = choice.get("message") or {}
            result["content"] = message.get("content")
            if message.get("tool_calls"):
                result["tool_calls"] = message["tool_calls"]
            result["finish_reason"] = choice.get("finish_reason")
            result["usage"] = completion.get("usage")
            if result["usage"]:
                # Priced as the usage row is: the target that served it, the built-in table as fallback.
                result["cost"] = prices.cost(
                    prices.prices_for(entry, routed.route.upstream_model),
                    result["usage"].get("prompt_tokens", 0),
                    result["usage"].get("completion_tokens", 0),
                )
        except ApiError as error:
            result["error"] = {"code": error.code, "message": error.message, "status": error.status}
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result


def _first_success(plan: RoutePlan, call: Callable[[Attempt], dict[str, Any]]) -> dict[str, Any]:
    """Try the plan's attempts until one succeeds; the plan raises when none is left."""
    for attempt in plan:
        try:
            result = call(attempt)
        except ProviderError as error:
            attempt.failed(error)
            continue
        except BaseException:
            attempt.abandoned()
            raise
        attempt.succeeded()
        return result
    raise AssertionError("a route plan ends by raising")  # pragma: no cover
