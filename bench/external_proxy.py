"""Benchmark of the external API proxy: the latency the hop adds and the requests per second it serves.

Starts a loopback upstream and the gateway under its production gunicorn configuration, then measures
GET calls made directly and through POST /api/external/get (with authentication, the egress guard, the
retry wrapper and the audit row all on). Run: `make bench-external` (or `.venv/bin/python bench/external_proxy.py`).
Results go to stdout and bench/results/external_proxy.md.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from bench/: the repository's packages are one level up
from scripts.cluster import free_port, migrate, start_instance, stop, wait_healthy  # noqa: E402

SEQUENTIAL_CALLS = int(os.environ.get("BENCH_SEQUENTIAL", "400"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
DURATION = float(os.environ.get("BENCH_DURATION", "10"))


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = json.dumps({"ok": True, "items": list(range(20))}).encode()

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms a call.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def upstream() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@contextmanager
def gateway(workdir: Path) -> str:
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "RATE_LIMIT_ENABLED": "false",
        "EXTERNAL_API_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32",
        "GUNICORN_WORKERS": os.environ.get("BENCH_WORKERS", "1"),
        "LOG_LEVEL": "WARNING",
    }
    migrate(env)
    process = start_instance(port, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        stop([process])


def login(url: str) -> str:
    body = {"username": "bench", "email": "bench@example.com", "password": "Bench-Pass-123"}
    httpx.post(f"{url}/api/auth/register", json=body).raise_for_status()
    response = httpx.post(f"{url}/api/auth/login", json={"username": "bench", "password": "Bench-Pass-123"})
    response.raise_for_status()
    return response.json()["access_token"]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def sequential(call) -> list[float]:
    for _ in range(20):  # warm the pools
        call()
    timings = []
    for _ in range(SEQUENTIAL_CALLS):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def concurrent(make_call) -> tuple[float, float, int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + DURATION

    def worker() -> None:
        call = make_call()
        mine = []
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                call()
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), percentile(latencies, 0.99), errors[0]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, upstream() as upstream_url, gateway(Path(tmp)) as url:
        token = login(url)
        target = f"{upstream_url}/items"
        headers = {"Authorization": f"Bearer {token}"}

        def direct_factory():
            client = httpx.Client()
            return lambda: client.get(target).raise_for_status()

        def proxied_factory():
            client = httpx.Client(timeout=30)

            def call() -> None:
                response = client.post(f"{url}/api/external/get", json={"url": target}, headers=headers)
                response.raise_for_status()
                assert response.json()["status_code"] == 200

            return call

        direct = sequential(direct_factory())
        proxied = sequential(proxied_factory())
        direct_rps, direct_p99, direct_errors = concurrent(direct_factory)
        proxied_rps, proxied_p99, proxied_errors = concurrent(proxied_factory)

    added_p50 = statistics.median(proxied) - statistics.median(direct)
    added_p99 = percentile(proxied, 0.99) - percentile(direct, 0.99)
    lines = [
        "# External API proxy benchmark",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"gateway: gunicorn gevent, {os.environ.get('BENCH_WORKERS', '1')} worker; SQLite; audit rows on.",
        f"Command: `make bench-external` ({SEQUENTIAL_CALLS} sequential calls; {CONCURRENCY} concurrent clients "
        f"for {DURATION:g} s). Load generator, upstream and gateway share the machine.",
        "",
        "| measure | direct | through /api/external/get | added by the proxy |",
        "| --- | --- | --- | --- |",
        f"| sequential p50 (ms) | {statistics.median(direct):.2f} | {statistics.median(proxied):.2f} | {added_p50:.2f} |",
        f"| sequential p99 (ms) | {percentile(direct, 0.99):.2f} | {percentile(proxied, 0.99):.2f} | {added_p99:.2f} |",
        f"| requests/s, {CONCURRENCY} clients | {direct_rps:.0f} | {proxied_rps:.0f} | |",
        f"| p99 under load (ms) | {direct_p99:.1f} | {proxied_p99:.1f} | |",
        f"| errors | {direct_errors} | {proxied_errors} | |",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "external_proxy.md").write_text(report)
    return 1 if proxied_errors or direct_errors else 0


if __name__ == "__main__":
    sys.exit(main())
