"""app/services/gateway/provider_connect.py: under gevent, a provider connection to an IP address goes
on at once when its handshake is done, waits (up to the connect timeout) when it is not, and fails as
urllib3's own connect fails. Run in a fresh interpreter: gevent must patch before anything is imported."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.fresh_app import run_in_fresh_app

_UNDER_GEVENT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import socket
    import time

    import gevent
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    from app.services.gateway.upstream import _Connection

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # one handshake completes unaccepted; later SYNs are dropped until it is taken
    port = listener.getsockname()[1]

    ran = []
    gevent.spawn(ran.append, "another greenlet")
    first = _Connection("127.0.0.1", port, timeout=5)
    first.connect()
    print(first.sock.getpeername()[1] == port, len(ran), first.sock.gettimeout())

    # The listener's queue is full now: the handshake stays under way and the connect timeout ends it.
    second = _Connection("127.0.0.1", port, timeout=0.3)
    started = time.monotonic()
    try:
        second.connect()
        print("connected")
    except ConnectTimeoutError:
        print("timeout", time.monotonic() - started)

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    try:
        _Connection("127.0.0.1", refused_port, timeout=5).connect()
        print("connected")
    except NewConnectionError as error:
        print("refused", "Connection refused" in str(error))

    # A name is resolved and connected by urllib3, as before.
    named = _Connection("localhost", port, timeout=0.3)
    try:
        named.connect()
        print("connected")
    except ConnectTimeoutError:
        print("name: timeout")
    """
)


def test_under_gevent_a_connection_to_an_ip_address_goes_on_without_a_switch(tmp_path: Path):
    connected, timed_out, refused, named = run_in_fresh_app(_UNDER_GEVENT, tmp_path).splitlines()
    # Connected, no other greenlet ran meanwhile (gevent's connect() waited for the loop's turn), and the
    # socket keeps the timeout for its reads.
    assert connected == "True 0 5.0"
    outcome, waited = timed_out.split()
    assert outcome == "timeout" and 0.25 < float(waited) < 5
    assert refused == "refused True"
    assert named == "name: timeout"
