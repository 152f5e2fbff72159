"""The in-process rate-limit storage: no timer thread per hit, expired counters still swept."""

from __future__ import annotations

import threading
import time

import limits.storage.memory
import pytest
from limits.storage import MemoryStorage, storage_from_string

from app.utils import rate_limit_storage
from app.utils.rate_limit_storage import SweepingMemoryStorage, storage_uri


@pytest.fixture
def timers_started(monkeypatch):
    started = []

    class CountingTimer(threading.Timer):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(limits.storage.memory.threading, "Timer", CountingTimer)
    return started


def test_hits_start_no_timer_thread(timers_started):
    storage = SweepingMemoryStorage()
    before = len(timers_started)
    for _ in range(200):
        storage.incr("key", expiry=60)
    assert storage.get("key") == 200
    assert len(timers_started) == before
    # The parent re-arms a timer after hits: the reason this class exists.
    parent = MemoryStorage()
    time.sleep(0.05)  # its first timer has run out
    before = len(timers_started)
    parent.incr("key", expiry=60)
    assert len(timers_started) > before


def test_expired_counters_are_swept_inline(monkeypatch):
    monkeypatch.setattr(rate_limit_storage, "SWEEP_INTERVAL", 0.0)
    storage = SweepingMemoryStorage()
    storage.incr("short", expiry=0.01)
    time.sleep(0.03)
    storage.incr("other", expiry=60)  # a hit runs the sweep
    assert "short" not in storage.storage
    assert storage.get("other") == 1


def test_memory_urls_select_it_and_others_are_left_alone():
    assert isinstance(storage_from_string(storage_uri("memory://")), SweepingMemoryStorage)
    assert storage_uri("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert type(storage_from_string("memory://")) is MemoryStorage  # "memory" itself is not taken over


def test_the_app_uses_it_without_redis(app, backend):
    storage = app.extensions["rate_limits"].storage
    if backend["REDIS_URL"]:
        assert type(storage).__name__ == "RedisStorage"
    else:
        assert isinstance(storage, SweepingMemoryStorage)
