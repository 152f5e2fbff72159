"""The guarded client under gevent's monkey-patching, as gunicorn's gevent workers will run it.

Runs in a subprocess: patching this pytest process would change every other test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("gevent")

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import time
    import gevent
    from werkzeug.wrappers import Response
    from app.errors import DestinationNotAllowed
    from app.services.external_api_service import ExternalApiSettings, build_client, call_external
    from app.utils.egress_guard import EgressPolicy
    from tests.upstreams.server import Upstream, json_response

    def slow(request):
        time.sleep(0.3)
        return json_response({"n": request.args["n"]})

    settings = ExternalApiSettings(timeout=5, policy=EgressPolicy(allow_private_networks=("127.0.0.1/32",)))
    client = build_client(settings)
    with Upstream(slow) as up:
        started = time.monotonic()
        call = lambda n: call_external(client, settings, "GET", up.url, params={"n": n})
        jobs = [gevent.spawn(call, n) for n in range(30)]
        gevent.joinall(jobs, timeout=10)
        elapsed = time.monotonic() - started
        bodies = [job.value.body for job in jobs]
        assert bodies == [{"n": str(n)} for n in range(30)], [j.exception for j in jobs]
        assert elapsed < 2.0, elapsed  # 30 x 0.3 s overlapped: the client does not serialise greenlets
        strict = ExternalApiSettings(timeout=5)
        try:
            call_external(build_client(strict), strict, "GET", f"http://localhost:{up.port}/")
        except DestinationNotAllowed:
            print("OK", round(elapsed, 2))
    """
)


def test_guarded_client_under_gevent() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("OK"), done.stdout + done.stderr[-3000:]


STALLED_DNS = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import socket
    import time
    import gevent
    from app.errors import ApiError
    from app.services.external_api_service import ExternalApiSettings, build_client, call_external
    from app.utils.egress_guard import EgressPolicy

    def stalled(*args, **kwargs):  # a resolver that answers after 3 s
        gevent.sleep(3)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 9))]

    socket.getaddrinfo = stalled
    settings = ExternalApiSettings(timeout=1, policy=EgressPolicy(allow_private_networks=("127.0.0.1/32",)))
    started = time.monotonic()
    try:
        call_external(build_client(settings), settings, "GET", "http://stalled.example/")
    except ApiError as error:
        print(error.code, round(time.monotonic() - started, 2))
    """
)


def test_a_stalled_dns_lookup_ends_at_the_calls_deadline() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", STALLED_DNS], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    code, elapsed = done.stdout.split()
    assert code == "upstream_timeout"
    assert float(elapsed) < 2.5, elapsed  # the 1 s timeout, not the resolver's 3 s
