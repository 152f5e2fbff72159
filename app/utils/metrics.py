"""Prometheus metrics: one registry per app, or the multiprocess files under gunicorn.

With PROMETHEUS_MULTIPROC_DIR set (before the app is imported, as prometheus-client requires), every
worker writes its values to files there and /metrics sums them; gunicorn.conf.py marks dead workers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from app.services.gateway.breaker import CLOSED, HALF_OPEN, OPEN

BREAKER_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LLM = ("provider", "model")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "Time to the response headers, by route, method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_requests = Counter(
            "llm_requests", "LLM calls by provider, model and status.", [*_LLM, "status"], registry=r
        )
        self.llm_errors = Counter(
            "llm_errors", "Failed LLM calls by provider, model and error class.", [*_LLM, "error"], registry=r
        )
        self.llm_tokens = Counter(
            "llm_tokens",
            "Tokens by provider, model and direction (prompt, completion).",
            [*_LLM, "type"],
            registry=r,
        )
        self.llm_retries = Counter(
            "llm_retries",
            "Extra attempts (retries and fallbacks) by the serving provider and model.",
            _LLM,
            registry=r,
        )
        self.llm_fallbacks = Counter(
            "llm_fallbacks", "Calls served by a target other than the first choice.", _LLM, registry=r
        )
        self.llm_cost = Counter("llm_cost_usd", "Spend in USD by provider and model.", _LLM, registry=r)
        self.llm_latency = Histogram(
            "llm_request_duration_seconds", "Whole LLM call time.", _LLM, buckets=_LATENCY_BUCKETS, registry=r
        )
        self.llm_ttft = Histogram(
            "llm_time_to_first_token_seconds",
            "Time to the first token.",
            _LLM,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_in_flight = Gauge(
            "llm_requests_in_flight", "LLM calls in progress.", _LLM, multiprocess_mode="livesum", registry=r
        )
        # Read from the breakers (in Redis when configured) at scrape time: 0 closed, 1 half-open, 2 open.
        self.llm_breaker_state = Gauge(
            "llm_breaker_state",
            "Circuit breaker per target.",
            ["target"],
            multiprocess_mode="max",
            registry=r,
        )
        self.external_calls = Counter(
            "external_api_calls", "Calls through /api/external by outcome.", ["outcome"], registry=r
        )

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, remembered: labels() validates and locks on every call, and a proxied
        call takes about ten of them. The label sets are bounded (routes, statuses, catalog models)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def observe_breakers(self, gateway: Any) -> None:
        router = gateway.router
        targets = {target.key for entry in gateway.catalog.models.values() for target in entry.targets}
        for key in sorted(targets):
            self.llm_breaker_state.labels(key).set(BREAKER_VALUES.get(router.breaker.state(key), 0))

    def render(self) -> tuple[bytes, str]:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe_http(self, response: Response) -> Response:
        req = request._get_current_object()  # once: each use of the proxy looks the context up again
        rule = req.url_rule.rule if req.url_rule is not None else "unmatched"
        if rule == "/metrics":
            return response
        status = str(response.status_code)
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        self.child(self.http_requests, rule, req.method, status).inc()
        self.child(self.http_latency, rule, req.method, status).observe(elapsed)
        return response


def install_metrics(app: Flask) -> Metrics:
    metrics = Metrics()
    app.extensions["metrics"] = metrics
    app.after_request(metrics.observe_http)
    audit = app.extensions.get("external_audit")
    if audit is not None:
        audit.observers.append(
            lambda row: metrics.child(metrics.external_calls, row.get("outcome") or "unknown").inc()
        )
    return metrics
