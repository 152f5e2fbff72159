"""200 concurrent calls against the live gateway, with random provider faults: one usage row per call,
nothing lost and nothing doubled, and each row's status matches what its client saw."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import select

from app.extensions import db
from app.models import UsageRecord
from tests.conftest import bearer
from tests.gateway.conftest import provider_config
from tests.upstreams.openai_like import openai_like

CALLS = 200


def flaky(faults: Counter, seed: int = 7):
    """Answers, fails with a 500, or cuts a stream, at random; counts the faults it made."""
    ok = openai_like(reply="one two three")
    fail = openai_like(fail_status=500, fail_body={"error": {"message": "boom"}})
    cut = openai_like(reply="one two three four", cut_after=2)
    pick = random.Random(seed)
    lock = threading.Lock()

    def handler(request):
        with lock:
            roll = pick.random()
        if roll < 0.25:
            faults["failed"] += 1
            return fail(request)
        if roll < 0.4:
            faults["cut"] += 1
            return cut(request)
        return ok(request)

    return handler


def test_usage_rows_equal_the_calls_made_under_concurrency(upstream, gateway):
    faults: Counter = Counter()
    standin = upstream(flaky(faults))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    headers = bearer(gw.token)
    kinds = ["chat", "stream", "embeddings", "mock"] * (CALLS // 4)

    def call(kind: str) -> tuple[str, str]:
        with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as client:
            if kind == "embeddings":
                response = client.post("/v1/embeddings", json={"model": "p/e", "input": "x"})
                return kind, "ok" if response.status_code == 200 else "error"
            body = {
                "model": "mock/echo-1" if kind == "mock" else "p/m",
                "messages": [{"role": "user", "content": "hi"}],
            }
            if kind != "stream":
                response = client.post("/v1/chat/completions", json=body)
                return kind, "ok" if response.status_code == 200 else "error"
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                if response.status_code != 200:
                    return kind, "error"
                text = response.read().decode()
                return kind, "ok" if text.rstrip().endswith("data: [DONE]") else "error"

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        outcomes = list(pool.map(call, kinds))

    gw.app.extensions["usage_writer"].flush()
    with gw.app.app_context():
        found = list(db.session.execute(select(UsageRecord.endpoint, UsageRecord.model, UsageRecord.status)))
        request_ids = list(db.session.scalars(select(UsageRecord.request_id)))
    assert len(found) == CALLS
    assert len(set(request_ids)) == CALLS  # one row per request: none doubled
    endpoint = {"chat": "chat", "mock": "chat", "stream": "stream", "embeddings": "embeddings"}
    seen = Counter((endpoint[kind], outcome) for kind, outcome in outcomes)
    recorded = Counter((row.endpoint, row.status) for row in found)
    assert recorded == seen
    # The faults did happen (a router may retry some of them away, so the clients need not see them all).
    assert faults["failed"] > 10 and faults["cut"] > 5
    assert seen[("chat", "ok")] > 0 and seen[("stream", "ok")] > 0
