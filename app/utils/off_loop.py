"""Blocking work that must not stop gevent's event loop.

Under gevent every greenlet of a worker shares one OS thread: a batch INSERT that runs in a greenlet holds
every request of that worker for as long as it takes (450 usage rows on SQLite: ~12 ms, twice a second at
~900 calls/s, which was half of the p99 latency of a proxied call; bench/README.md). Run in one of the
hub's native threads instead, the calling greenlet waits and the others go on; the database driver
releases the GIL while it waits on the disk or the network.

Background writes (usage and audit rows) go to threads of their own at a lower OS priority: at the
worker's own priority a flush competed with the requests for the one core and the GIL on equal terms, and
a call that overlapped a flush of 100 rows took 0.5-1 ms longer. At BACKGROUND_NICENESS the scheduler runs
the request thread first whenever it is ready, and still gives a flush about a tenth of a saturated core,
several times what it needs (bench/README.md, "Flushes at a lower priority").
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

BACKGROUND_NICENESS = 10  # above the worker's own; 19 starved the flush on a saturated core (rows piled up)
BACKGROUND_THREADS = 4  # one per background writer: one waiting on a stalled database holds up no other
_background_pools: dict[int, Any] = {}  # by process id: a pool's threads do not survive a fork


def gevent_active() -> bool:
    """Whether this process runs under gevent's monkey-patching (gunicorn's gevent workers)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def run_off_loop(work: Callable[[], _T], *, background: bool = False) -> _T:
    """`work()` in a native thread under gevent (its exception re-raised here); in this thread otherwise.

    background: batched writes, which can wait for the requests, run in a thread at a lower OS priority.
    """
    if not gevent_active():
        return work()
    import gevent

    if background:
        return _background_pool().apply(_at_lower_priority, (work,))
    return gevent.get_hub().threadpool.apply(work)


def start_daemon(target: Callable[[], Any], *, name: str) -> None:
    """Run `target()` alongside the caller, which does not wait for it: a daemon thread, or under gevent a
    bare greenlet, which is what gevent makes of a thread anyway, without the Thread object and the
    start-up handshake that switches to the event loop and back (18 against 10 µs here, twice a stream).
    `target` must handle its own exceptions (under gevent an escaped one is printed by the hub)."""
    if gevent_active():
        import gevent

        gevent.spawn_raw(target)
        return
    threading.Thread(target=target, name=name, daemon=True).start()


def _at_lower_priority(work: Callable[[], _T]) -> _T:
    """`work()` once this OS thread's nice value is BACKGROUND_NICENESS above the main thread's. Set before
    each call (two system calls), so a thread the pool starts later is lowered too. Linux only: there a
    nice value belongs to one thread; elsewhere setpriority() would lower the whole process."""
    if sys.platform == "linux":
        try:
            wanted = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + BACKGROUND_NICENESS)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), wanted)
        except OSError:  # not allowed here (a sandbox): the work runs all the same
            pass
    return work()


def _background_pool() -> Any:
    pool = _background_pools.get(os.getpid())
    if pool is None:
        from gevent.threadpool import ThreadPool

        pool = _background_pools[os.getpid()] = ThreadPool(BACKGROUND_THREADS)
    return pool
