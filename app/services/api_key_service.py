"""API keys as a use case: create one (the secret is shown once), list them, revoke one."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import select

from app.errors import NotFound, ValidationFailed
from app.extensions import db
from app.models import ApiKey
from app.schemas.common import MAX_INTEGER
from app.services.api_key_verifier import API_KEY_PREFIX, hash_secret

# "mla-" and 8 characters of the secret: enough to tell keys apart, far too few to help a guesser.
SHOWN_PREFIX_LENGTH = len(API_KEY_PREFIX) + 8


def generate_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(
    user_id: int, name: str, expires_at: datetime | None, models: Sequence[str] | None
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its secret, which is not kept anywhere."""
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ValidationFailed(
            "expires_at must be in the future.",
            details={"fields": {"expires_at": ["Must be in the future."]}},
        )
    if expires_at is not None:
        # SQLite keeps the wall time and drops the offset, so only UTC goes into the column.
        expires_at = expires_at.astimezone(UTC)
    secret = generate_secret()
    key = ApiKey(
        user_id=user_id,
        name=name,
        prefix=secret[:SHOWN_PREFIX_LENGTH],
        key_hash=hash_secret(secret),
        models=list(models) if models is not None else None,
        expires_at=expires_at,
    )
    db.session.add(key)
    db.session.commit()
    return key, secret


def list_keys(user_id: int) -> list[ApiKey]:
    """The user's keys that are not revoked, newest first (expired ones stay listed until revoked)."""
    return list(
        db.session.scalars(
            select(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        )
    )


def live_key(user_id: int, key_id: int) -> ApiKey:
    """The user's key of that id, not revoked; NotFound for an unknown, foreign or revoked one."""
    if not 0 < key_id <= MAX_INTEGER:  # no row has it, and PostgreSQL would refuse it in the query
        raise NotFound("No such API key.")
    key = db.session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
    )
    if key is None:
        raise NotFound("No such API key.")
    return key


def revoke_key(user_id: int, key_id: int) -> None:
    """Revoke at once in every instance; an unknown, foreign or already revoked key is NotFound."""
    key = live_key(user_id, key_id)
    verifier = current_app.extensions["api_keys"]
    # The other instances are told first: told after the commit and failing, they would go on letting the
    # key in for their cache's life, and a retry would find the key already revoked (404).
    verifier.mark_revoked(key.key_hash)
    key.revoked_at = datetime.now(UTC)
    db.session.commit()
    verifier.mark_revoked(key.key_hash)  # and again: this process may have cached it meanwhile
