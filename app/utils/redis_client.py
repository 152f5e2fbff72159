from __future__ import annotations

import redis


def redis_from_url(url: str) -> redis.Redis:
    """One pooled client per process; short timeouts so a stalled Redis cannot hang requests."""
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30)
