"""Checking an API key on every request: cheap on the common path, and a revocation holds at once.

Hashing: a secret is "mla-" + 256 random bits, so one SHA-256 is enough; nobody can search a 256-bit
space, whatever the hash costs. A password hash (scrypt, ~50 ms) would add that much to every API call
and buy nothing. The hash is the lookup key: one indexed equality, never a scan of the table.

Caching and revocation:
- With Redis, a verified key is cached in process for CACHE_TTL seconds, and each check of a cached key
  costs one Redis EXISTS on its revoked marker and no SQL. Revoking writes the marker (kept longer than
  any cache entry can live), then revoked_at, so every instance refuses the key from the next request,
  and a Redis failure leaves the key unrevoked for the caller to retry rather than revoked only in SQL.
- Without Redis, no process can tell the others, so a verified key is cached for LOCAL_CACHE_TTL (one
  second) only: the process that revokes a key refuses it at once, every other worker within a second,
  and a busy worker pays one indexed SELECT per key a second instead of one per request (0.7 ms each).

last_used_at is not written per request: uses are noted in memory and written at most once a minute
per key and process (the first use writes at once), so the column is accurate to about a minute.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.errors import InvalidToken
from app.extensions import db
from app.models import ApiKey
from app.models.user import as_utc
from app.utils.ttl_cache import TTLCache

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "mla-"
CACHE_TTL = 30.0
LOCAL_CACHE_TTL = 1.0  # without Redis: the longest a revocation takes to reach the other workers
CACHE_SIZE = 10_000
USAGE_INTERVAL = 60.0
# Any cache entry filled before a revocation dies within CACHE_TTL; after that the row's revoked_at
# decides. An hour leaves a wide margin for clock and scheduling slack at negligible Redis cost.
REVOKED_MARKER_TTL = 3600


@dataclass(frozen=True)
class VerifiedKey:
    key_id: int
    user_id: int
    models: tuple[str, ...] | None  # None: every model
    expires_at: datetime | None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class LastUsedRecorder:
    """Remembers when each key was last used and hands out the uses that are due to be written."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._pending: dict[int, datetime] = {}
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def record(self, key_id: int, moment: datetime) -> None:
        with self._lock:
            self._pending[key_id] = moment

    def take_due(self, force: bool = False) -> dict[int, datetime]:
        now = self._clock()
        with self._lock:
            due = {
                key_id: moment
                for key_id, moment in self._pending.items()
                if force or now - self._written.get(key_id, -math.inf) >= self.interval
            }
            for key_id in due:
                del self._pending[key_id]
                self._written[key_id] = now
            if len(self._written) > CACHE_SIZE:
                # Write times older than the interval hold nothing back any more.
                self._written = {k: t for k, t in self._written.items() if now - t < self.interval}
            return due


class ApiKeyVerifier:
    """One per app (process): the cache, the Redis client and the usage notes live here."""

    REVOKED_PREFIX = "mla:revoked-key:"

    def __init__(self, redis_client: redis.Redis | None) -> None:
        self.redis = redis_client
        self.cache: TTLCache[str, VerifiedKey] = TTLCache(
            CACHE_TTL if redis_client is not None else LOCAL_CACHE_TTL, CACHE_SIZE
        )
        self.usage = LastUsedRecorder(USAGE_INTERVAL)

    def verify(self, secret: str) -> VerifiedKey:
        """The key behind a secret, or InvalidToken saying why it is refused."""
        key_hash = hash_secret(secret)
        key = self.cache.get(key_hash)
        if key is not None:
            if self.redis is not None and self.redis.exists(self.REVOKED_PREFIX + key_hash):
                self.cache.discard(key_hash)
                raise InvalidToken("The API key has been revoked.")
        else:
            key = self._load(key_hash)
            self.cache.set(key_hash, key)
        now = datetime.now(UTC)
        if key.expires_at is not None and key.expires_at <= now:
            raise InvalidToken("The API key has expired.")
        self.usage.record(key.key_id, now)
        self.flush_usage()
        return key

    def mark_revoked(self, key_hash: str) -> None:
        """Drop the local entry and tell the other instances: before revoked_at is committed, and after."""
        self.cache.discard(key_hash)
        if self.redis is not None:
            self.redis.set(self.REVOKED_PREFIX + key_hash, 1, ex=REVOKED_MARKER_TTL)

    def flush_usage(self, force: bool = False) -> int:
        """Write the last-use times that are due (all of them with force); returns how many."""
        due = self.usage.take_due(force)
        if not due:
            return 0
        statement = (
            update(ApiKey)
            .where(ApiKey.id == bindparam("key_id"))
            .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("used_at")))
            .values(last_used_at=bindparam("used_at"))
        )
        rows = [{"key_id": key_id, "used_at": moment} for key_id, moment in due.items()]
        try:
            db.session.connection().execute(statement, rows)
            db.session.commit()
        except SQLAlchemyError:
            # Bookkeeping only: a failed write must not fail the caller's request.
            db.session.rollback()
            logger.warning("could not record API key use", exc_info=True)
        return len(due)

    def _load(self, key_hash: str) -> VerifiedKey:
        row = db.session.execute(
            select(
                ApiKey.id,
                ApiKey.user_id,
                ApiKey.key_hash,
                ApiKey.models,
                ApiKey.expires_at,
                ApiKey.revoked_at,
            ).where(ApiKey.key_hash == key_hash)
        ).one_or_none()
        # The index found the row by equality; the constant-time compare keeps the final check honest.
        if row is None or not hmac.compare_digest(row.key_hash, key_hash):
            raise InvalidToken("The API key is invalid.")
        if row.revoked_at is not None:
            raise InvalidToken("The API key has been revoked.")
        return VerifiedKey(
            key_id=row.id,
            user_id=row.user_id,
            models=tuple(row.models) if row.models is not None else None,
            expires_at=as_utc(row.expires_at) if row.expires_at else None,
        )
