"""A bare Flask app that relays chat calls to the mock with urllib3: a gateway on this stack, minus its work.

Served as the gateway is served (gunicorn.conf.py: its worker class, one worker on the gateway's core), with
none of the gateway's work: no authentication, limits, routing, usage, stream deadlines or heartbeats, no
error mapping. What it costs is what the server, Flask and an ordinary use of urllib3 cost. Not a hard
floor: the gateway's provider client does less per call than PoolManager.request. `make bench-floor`
(bench/README.md).

Settings: FLOOR_UPSTREAM (the mock's base URL, ending in /v1) and FLOOR_API_KEY.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import orjson
import urllib3
from flask import Flask, Response, request

UPSTREAM = os.environ["FLOOR_UPSTREAM"].rstrip("/") + "/chat/completions"
HEADERS = {"Authorization": f"Bearer {os.environ['FLOOR_API_KEY']}", "Content-Type": "application/json"}

app = Flask(__name__)
# One pool per worker, as the gateway has: connections kept, an extra one opened past maxsize.
client = urllib3.PoolManager(
    maxsize=1000, block=False, retries=False, timeout=urllib3.Timeout(connect=5, read=60)
)


@app.post("/v1/chat/completions")
def chat_completions() -> Response:
    body = orjson.loads(request.get_data())
    upstream = client.request(
        "POST", UPSTREAM, body=orjson.dumps(body), headers=HEADERS, preload_content=False
    )
    if not body.get("stream"):
        data = upstream.read()
        upstream.release_conn()
        return Response(data, status=upstream.status, content_type="application/json")

    def relay() -> Iterator[bytes]:
        try:
            yield from upstream.stream(None)  # each HTTP chunk of the upstream's body as it arrives
        finally:
            upstream.release_conn()

    return Response(relay(), status=upstream.status, content_type="text/event-stream")
