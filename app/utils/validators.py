"""Rules for usernames, emails and passwords; each returns the normalised value or raises ValueError."""

from __future__ import annotations

import unicodedata
from functools import cache
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 8, 128
_USERNAME_PUNCTUATION = frozenset("_.-")
_COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


def normalise_username(raw: str) -> str:
    # NFKC folds look-alike forms (fullwidth letters, ligatures) into one spelling before we judge it.
    username = unicodedata.normalize("NFKC", raw).strip()
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise ValueError(f"Username must be {USERNAME_MIN} to {USERNAME_MAX} characters long.")
    if not all(char.isalnum() or char in _USERNAME_PUNCTUATION for char in username):
        raise ValueError("Username may contain only letters, digits, '_', '.' and '-'.")
    return username


def username_key(username: str) -> str:
    return unicodedata.normalize("NFKC", username).casefold()


def normalise_email(raw: str) -> str:
    try:
        # Syntax only: a DNS lookup would make registration slow and depend on the network.
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(f"Email address is not valid: {error}") from None


def email_key(email: str) -> str:
    return email.casefold()


@cache
def common_passwords() -> frozenset[str]:
    lines = _COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def check_password_strength(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValueError(f"Password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long.")
    missing = [
        label
        for label, present in (
            ("an upper-case letter", any(c.isupper() for c in password)),
            ("a lower-case letter", any(c.islower() for c in password)),
            ("a digit", any(c.isdigit() for c in password)),
        )
        if not present
    ]
    if missing:
        raise ValueError("Password must contain " + ", ".join(missing) + ".")
    if password in common_passwords():
        raise ValueError("Password is too common; choose another.")
    return password
