"""Instructions one proxied call costs the gateway, counted by callgrind: `make bench-instructions`.

Requests per second on this shared host move by a third between runs, so a change of a few percent in
the hot path cannot be seen in them. callgrind counts the instructions the process executes, which do
not depend on what else the machine is doing (repeatable within about 1 %).

The gateway runs in this process under gevent (no server in front), configured as `make bench` runs it:
SQLite, rate limits on, usage recorded, the caller authenticated by an API key, the access log written
(to /dev/null); the upstream is bench/mock_upstream.py.
After a warm-up, N calls run inside one functools.reduce, and callgrind counts only inside that C
function (--toggle-collect), so start-up and warm-up are left out. Usage rows are written every 100
calls (counted), and nothing runs on a wall-clock timer, so the count does not depend on how fast
valgrind happens to run.

    python bench/call_cost.py                 # chat calls: M instructions per call
    python bench/call_cost.py --stream 50     # streamed calls of 50 chunks
    python bench/call_cost.py --stream 50 --interval 20   # ... 20 ms apart: the relay waits for each
    python bench/call_cost.py --cpu           # no valgrind: CPU time per call (noisy here)
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

BENCH_DIR = Path(__file__).resolve().parent
# bench/ for its tools, the repository for the app (gevent.monkey runs the script without its folder).
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import targets  # noqa: E402

WARM_UP = 30
FLUSH_EVERY = 100  # calls per usage batch: about what one second holds at full speed on one core


def _make_call(run_dir: Path, stream_chunks: int, interval_ms: int = 0):
    """Start the mock and the app; return a function that makes one call, the mock and the app."""
    mock = targets.start_mock(run_dir)
    os.environ.update(
        {
            **targets.gateway_settings(run_dir / "cost.db", mock),
            # Work done once per interval of wall-clock time would be counted at valgrind's pace (a few
            # calls a second) and move with the host's load: usage batches are written every
            # FLUSH_EVERY calls instead, and the limits and credential caches do not expire mid-run.
            "BATCH_FLUSH_INTERVAL": "3600",
            "LIMITS_CACHE_SECONDS": "3600",
            "LOG_LEVEL": "info",  # the access log line is part of a call's cost
        }
    )
    os.environ.pop("REDIS_URL", None)
    from werkzeug.test import EnvironBuilder

    from app import create_app
    from app.extensions import db
    from app.services.lifecycle import start_writers

    app = create_app()
    # The access log line is still formatted and written for every call, to nowhere.
    for handler in logging.getLogger().handlers:
        handler.setStream(open(os.devnull, "w"))  # noqa: SIM115  (for the life of the process)
    with app.app_context():
        db.create_all()
    start_writers(app)
    app.extensions["api_keys"].cache.ttl = 3600.0
    live_logins = getattr(app.extensions["revocations"], "live", None)
    if live_logins is not None:
        live_logins.ttl = 3600.0
    client = app.test_client()
    user = {
        "username": "costuser",
        "email": "cost@example.com",
        "password": secrets.token_urlsafe(12) + "aA1!",
    }
    assert client.post("/api/auth/register", json=user).status_code == 201
    login = client.post("/api/auth/login", json={"username": user["username"], "password": user["password"]})
    bearer = {"Authorization": f"Bearer {login.json['access_token']}"}
    key = client.post("/api/keys", json={"name": "cost"}, headers=bearer).json["key"]

    messages = [{"role": "user", "content": "hi"}]
    if stream_chunks:
        model = f"openai/mock-c{stream_chunks}-i{interval_ms}"
        payload = {"model": model, "stream": True, "messages": messages}
    else:
        payload = {"model": "openai/mock", "messages": messages}
    body = orjson.dumps(payload)
    environ = EnvironBuilder(
        path="/v1/chat/completions",
        method="POST",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    ).get_environ()

    def call() -> None:
        # The WSGI callable itself, as a server would drive it.
        statuses: list[str] = []
        answer = app({**environ, "wsgi.input": io.BytesIO(body)}, lambda status, *_: statuses.append(status))
        b"".join(answer)
        getattr(answer, "close", lambda: None)()
        assert statuses[0].startswith("200"), statuses

    return call, mock, app


def run_inner(calls: int, stream_chunks: int, interval_ms: int, cpu: bool) -> None:
    from app.services.lifecycle import flush_writers

    with tempfile.TemporaryDirectory(prefix="call-cost-") as run_dir:
        call, mock, app = _make_call(Path(run_dir), stream_chunks, interval_ms)
        try:
            for _ in range(WARM_UP):
                call()
            started = time.process_time()

            def step(_: None, index: int) -> None:
                call()
                if index % FLUSH_EVERY == FLUSH_EVERY - 1:
                    flush_writers(app)

            functools.reduce(step, range(calls), None)  # callgrind counts inside this
            if cpu:
                print(f"{(time.process_time() - started) / calls * 1000:.3f} ms CPU per call")
        finally:
            flush_writers(app)  # before the database goes with the directory
            mock.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument(
        "--stream", type=int, default=0, metavar="CHUNKS", help="streamed calls of CHUNKS chunks"
    )
    parser.add_argument(
        "--interval",
        type=int,
        default=0,
        metavar="MS",
        help="with --stream: the chunks MS apart, not at once",
    )
    parser.add_argument("--cpu", action="store_true", help="measure CPU time instead (no valgrind)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        run_inner(args.calls, args.stream, args.interval, args.cpu)
        return 0
    # The calls run in a child patched by gevent before anything is imported, as gunicorn's gevent
    # worker is (streams relay through greenlets there).
    inner = [sys.executable, "-m", "gevent.monkey", __file__, "--inner", f"--calls={args.calls}"]
    inner += [f"--stream={args.stream}", f"--interval={args.interval}"]
    if args.cpu:
        return subprocess.run([*inner, "--cpu"], check=False).returncode
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (apt-get install -y valgrind); or use --cpu", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out_dir:
        command = [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            f"--callgrind-out-file={out_dir}/callgrind.out",
            *inner,
        ]
        # A fixed hash seed: dict and set layouts, and so the instruction counts, repeat run to run.
        done = subprocess.run(
            command, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=False
        )
    collected = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or collected is None:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    kind = f"streamed call of {args.stream} chunks" if args.stream else "chat call"
    if args.stream and args.interval:
        kind += f" {args.interval} ms apart"
    print(f"{int(collected.group(1)) / args.calls / 1e6:.3f} M instructions per {kind} ({args.calls} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
