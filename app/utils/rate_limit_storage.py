"""In-process rate-limit counters (the `limits` library's) without a timer thread behind every hit.

limits' MemoryStorage re-arms a 10 ms threading.Timer after each hit to drop expired counters; under
gevent every re-arm starts a greenlet and yields to the hub, which cost about a tenth of a proxied
call's CPU. Reads already ignore an expired counter (MemoryStorage.get), so the sweep only frees
memory: here it runs inline, at most once every SWEEP_INTERVAL seconds.

RATE_LIMIT_STORAGE_URL=memory:// selects this storage (app/config.py); redis:// is left as it is.
"""

from __future__ import annotations

import time

from limits.storage import MemoryStorage

SCHEME = "memory-sweep"
SWEEP_INTERVAL = 1.0


class SweepingMemoryStorage(MemoryStorage):
    STORAGE_SCHEME = [SCHEME]  # its own name: a subclass would otherwise take over "memory" for everyone

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL

    # Replaces the parent's private hook (name-mangled), called by incr, decr and acquire_entry.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def storage_uri(configured: str) -> str:
    """The storage URL app/middleware/rate_limits.py opens for the configured one."""
    return f"{SCHEME}://" if configured.rstrip("/") in ("memory:", "memory://") else configured
