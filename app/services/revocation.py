"""Where revoked logins are remembered, so a revoked token stays refused in every process and instance.

The database row of the session is the source of truth. With REDIS_URL set, revocations are also
written to Redis, and checks read Redis only: one round trip, no SQL on the request path. Without
Redis, a session found live is remembered for LOCAL_CACHE_TTL (one second), as API keys are: the
process that revokes refuses at once, the other workers within a second.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select

from app.extensions import db
from app.models import AuthSession
from app.services.api_key_verifier import CACHE_SIZE, LOCAL_CACHE_TTL
from app.utils.ttl_cache import TTLCache

if TYPE_CHECKING:
    import redis


class RevocationStore(Protocol):
    def is_revoked(self, session_id: str) -> bool: ...
    def mark_revoked(self, session_ids: list[str]) -> None: ...


class DatabaseRevocations:
    def __init__(self) -> None:
        self.live: TTLCache[str, bool] = TTLCache(LOCAL_CACHE_TTL, CACHE_SIZE)

    def is_revoked(self, session_id: str) -> bool:
        if self.live.get(session_id):
            return False
        row = db.session.execute(
            select(AuthSession.revoked_at).where(AuthSession.id == session_id)
        ).one_or_none()
        # A session we do not know (a deleted user, a wiped database) counts as revoked.
        revoked = row is None or row.revoked_at is not None
        if not revoked:
            self.live.set(session_id, True)
        return revoked

    def mark_revoked(self, session_ids: list[str]) -> None:
        """The rows were already updated by the caller's transaction; forget them here at once."""
        for session_id in session_ids:
            self.live.discard(session_id)


class RedisRevocations:
    PREFIX = "mla:revoked-session:"

    def __init__(self, client: redis.Redis, ttl: timedelta) -> None:
        self.client = client
        self.ttl = ttl

    def is_revoked(self, session_id: str) -> bool:
        return bool(self.client.exists(self.PREFIX + session_id))

    def mark_revoked(self, session_ids: list[str]) -> None:
        if not session_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for session_id in session_ids:
            # Tokens of the session die with its refresh lifetime, so the marker may too.
            pipe.set(self.PREFIX + session_id, 1, ex=int(self.ttl.total_seconds()) + 60)
        pipe.execute()
