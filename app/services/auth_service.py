"""Accounts and logins: register, authenticate, issue and rotate tokens, revoke, change the profile."""

from __future__ import annotations

import secrets
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token, get_jti
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt import ExpiredSignatureError, PyJWTError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import Conflict, InvalidCredentials, InvalidToken, ValidationFailed
from app.extensions import db
from app.models import AuthSession, User
from app.utils.validators import email_key, username_key

# Verified when the username is unknown, so both failures cost one hash check and look alike.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    session_id: str
    jti: str
    token_type: str


def register_user(username: str, email: str, password: str) -> User:
    user = User(
        username=username,
        username_key=username_key(username),
        email=email,
        email_key=email_key(email),
        password_hash=generate_password_hash(password),
    )
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        # The unique indexes decide races between concurrent registrations of one name.
        db.session.rollback()
        raise _taken(username, email) from None
    return user


def _taken(username: str, email: str) -> Conflict:
    fields: dict[str, list[str]] = {}
    if db.session.scalar(select(User.id).where(User.username_key == username_key(username))):
        fields["username"] = ["This username is already taken."]
    if db.session.scalar(select(User.id).where(User.email_key == email_key(email))):
        fields["email"] = ["This email address is already registered."]
    return Conflict("The username or email address is already registered.", details={"fields": fields})


def login_key(login: str) -> str:
    """The account a login names, keyed as registration keys usernames (NFKC, trimmed, case-folded)."""
    # Without NFKC here a name in fullwidth letters or with a decomposed accent registers but cannot log in.
    return username_key(unicodedata.normalize("NFKC", login).strip())


def authenticate(login: str, password: str) -> User:
    user = db.session.scalar(
        select(User).where(
            or_(User.username_key == login_key(login), User.email_key == email_key(login.strip()))
        )
    )
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        raise InvalidCredentials()
    if not check_password_hash(user.password_hash, password):
        raise InvalidCredentials()
    return user


def start_session(user: User) -> dict[str, Any]:
    """Open a login and return its first token pair."""
    session_id = secrets.token_hex(16)
    access, refresh = _mint_pair(user.id, session_id)
    db.session.add(
        AuthSession(
            id=session_id,
            user_id=user.id,
            refresh_jti=get_jti(refresh),
            expires_at=datetime.now(UTC) + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"],
        )
    )
    db.session.commit()
    return _token_response(access, refresh)


def rotate_refresh_token(encoded: str) -> dict[str, Any]:
    """Trade a refresh token for a new pair; a token already traded revokes its whole login."""
    claims = decode_claims(encoded, expected_type="refresh")
    session = db.session.get(AuthSession, claims.session_id)
    if session is None or session.revoked_at is not None:
        raise InvalidToken("The refresh token has been revoked.", code="token_revoked")
    access, refresh = _mint_pair(claims.user_id, claims.session_id)
    # Compare-and-swap: of two concurrent refreshes with one token only one can win.
    swapped = db.session.execute(
        update(AuthSession)
        .where(
            AuthSession.id == claims.session_id,
            AuthSession.refresh_jti == claims.jti,
            AuthSession.revoked_at.is_(None),
        )
        .values(refresh_jti=get_jti(refresh), refreshed_at=datetime.now(UTC))
    ).rowcount
    if swapped != 1:
        db.session.rollback()
        revoke_sessions([claims.session_id], reason="refresh_reuse")
        raise InvalidToken(
            "The refresh token was already used; every token of this login is now revoked.",
            code="token_reused",
        )
    db.session.commit()
    return _token_response(access, refresh)


def revoke_sessions(session_ids: list[str], reason: str) -> None:
    if not session_ids:
        return
    with _revoking(session_ids, reason):
        db.session.commit()


@contextmanager
def _revoking(session_ids: list[str], reason: str) -> Iterator[None]:
    """Revoke the sessions' rows in the transaction the block commits.

    The revocation store (Redis) is told before the commit: were it told after and fail, the rows would say
    revoked while every instance still let the tokens in, and a retry would find nothing left to revoke (a
    password change cannot be retried at all). It is told again after the commit, since a process may have
    cached a session as live meanwhile. A block that raises skips that second step.
    """
    if not session_ids:
        yield
        return
    revocations = current_app.extensions["revocations"]
    revocations.mark_revoked(session_ids)
    db.session.execute(
        update(AuthSession)
        .where(AuthSession.id.in_(session_ids), AuthSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_reason=reason)
    )
    yield
    revocations.mark_revoked(session_ids)


def _other_live_sessions(user_id: int, keep_session_id: str | None) -> list[str]:
    return list(
        db.session.scalars(
            select(AuthSession.id).where(
                AuthSession.user_id == user_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.id != (keep_session_id or ""),
            )
        ).all()
    )


def update_profile(
    user: User,
    session_id: str | None,
    current_password: str,
    email: str | None,
    new_password: str | None,
) -> User:
    if email is None and new_password is None:
        raise ValidationFailed(
            "Nothing to change: send email or new_password.",
            details={"fields": {"body": ["Send email or new_password."]}},
        )
    if not check_password_hash(user.password_hash, current_password):
        raise InvalidCredentials("The current password is wrong.")
    # A new password logs out every other session, in the same transaction.
    others = _other_live_sessions(user.id, session_id) if new_password is not None else []
    with _revoking(others, reason="password_changed"):
        if email is not None:
            user.email = email
            user.email_key = email_key(email)
        if new_password is not None:
            user.password_hash = generate_password_hash(new_password)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise Conflict(
                "This email address is already registered.",
                details={"fields": {"email": ["This email address is already registered."]}},
            ) from None
    return user


def decode_claims(encoded: str, expected_type: str) -> TokenClaims:
    """Verify a JWT and read our claims; verified tokens are remembered until they expire.

    PyJWT's decoding costs about 2 ms a request (it checks every base64 character in Python, three
    times per token); a signature that verified once verifies again, so only expiry and type are
    re-checked for a remembered token. Revocation is checked by the caller on every request.
    """
    cache = current_app.extensions.get("verified_tokens")
    cached = cache.get(encoded) if cache is not None else None
    if cached is not None:
        claims, expires_at = cached
        if time.time() >= expires_at:
            raise InvalidToken("The token has expired.", code="token_expired")
        return _expect_type(claims, expected_type)
    claims, expires_at = _verify(encoded)
    if cache is not None:
        cache.set(encoded, (claims, expires_at))
    return _expect_type(claims, expected_type)


def _expect_type(claims: TokenClaims, expected_type: str) -> TokenClaims:
    if claims.token_type != expected_type:
        raise InvalidToken(
            f"A {expected_type} token is required, not a {claims.token_type} token.", code="wrong_token_type"
        )
    return claims


def _verify(encoded: str) -> tuple[TokenClaims, float]:
    try:
        payload = decode_token(encoded)
    except ExpiredSignatureError:
        raise InvalidToken("The token has expired.", code="token_expired") from None
    except (JWTExtendedException, PyJWTError, ValueError):
        raise InvalidToken("The token is invalid.") from None
    try:
        claims = TokenClaims(
            user_id=int(payload["sub"]),
            session_id=str(payload["sid"]),
            jti=str(payload["jti"]),
            token_type=str(payload["type"]),
        )
        return claims, float(payload["exp"])
    except (KeyError, TypeError, ValueError):
        raise InvalidToken("The token is invalid.") from None


def _mint_pair(user_id: int, session_id: str) -> tuple[str, str]:
    claims = {"sid": session_id}
    identity = str(user_id)
    return (
        create_access_token(identity=identity, additional_claims=claims),
        create_refresh_token(identity=identity, additional_claims=claims),
    )


def _token_response(access: str, refresh: str) -> dict[str, Any]:
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    }
