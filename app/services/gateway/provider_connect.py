"""A new connection to a provider at an IP address, under gevent, without waiting for the event loop's turn
when the handshake is already done.

gevent's connect() sends the SYN and, told EINPROGRESS, waits for the socket to turn writable: the greenlet
goes behind every other greenlet that is ready to run. To a provider on the same host (Ollama, vLLM, the
benchmark's mock) the handshake is done by the time connect() returns, yet the request still waited its
turn: in (c)'s first burst of 256 calls the ~190 that opened a connection sent their request a median 19 ms
after asking for the connection, where the others sent theirs at once (bench/README.md). Here a
zero-timeout poll asks first, and only a handshake still under way (a provider across a network) waits.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
from typing import Any

from gevent import monkey
from gevent.socket import wait_write

_os_poll = monkey.get_original("select", "poll")  # never blocks with a zero timeout: safe under gevent
_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY)


def address_family(host: str) -> int | None:
    """AF_INET or AF_INET6 for an IP address (IPv6 with or without brackets); None for a name."""
    try:
        version = ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def connect_to_address(
    family: int, host: str, port: int, timeout: float | None, options: Any = None
) -> socket.socket:
    """A connected socket with `options` set and `timeout` for its later reads and writes; TimeoutError
    when the handshake takes longer than `timeout`, OSError when it fails."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        for option in options or ():
            sock.setsockopt(*option)
        sock.setblocking(False)
        error = sock.connect_ex((host.strip("[]"), port))
        if error in _IN_PROGRESS:
            if not ready_now(sock, select.POLLOUT):
                wait_write(sock.fileno(), timeout=timeout, timeout_exc=TimeoutError("timed out"))
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        sock.settimeout(timeout)
        return sock
    except BaseException:
        sock.close()
        raise


def ready_now(sock: object, events: int) -> bool:
    """Whether the socket has any of the poll() `events` now. The operating system's poll() with a zero
    timeout: gevent's would build watchers and yield to the hub for a check that never waits."""
    poller = _os_poll()
    poller.register(sock, events)
    return bool(poller.poll(0))
