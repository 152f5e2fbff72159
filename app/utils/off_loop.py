"""Blocking work that must not stop gevent's event loop.

Under gevent every greenlet of a worker shares one OS thread: a batch INSERT that runs in a greenlet holds
every request of that worker for as long as it takes (450 usage rows on SQLite: ~12 ms, twice a second at
~900 calls/s, which was half of the p99 latency of a proxied call; bench/README.md). Run in one of the
hub's native threads instead, the calling greenlet waits and the others go on; the database driver
releases the GIL while it waits on the disk or the network.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def gevent_active() -> bool:
    """Whether this process runs under gevent's monkey-patching (gunicorn's gevent workers)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def run_off_loop(work: Callable[[], _T]) -> _T:
    """`work()` in a native thread under gevent (its exception re-raised here); in this thread otherwise."""
    if not gevent_active():
        return work()
    import gevent

    return gevent.get_hub().threadpool.apply(work)
