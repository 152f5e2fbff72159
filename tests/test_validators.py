"""Property tests for the account rules: every input gets the documented decision."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.utils import validators

ALLOWED = string.ascii_letters + string.digits + "_.-"


@given(st.text(alphabet=ALLOWED, min_size=3, max_size=32))
def test_usernames_of_allowed_characters_pass_unchanged(name):
    assert validators.normalise_username(name) == name


@given(st.text(alphabet=ALLOWED, min_size=1, max_size=10), st.sampled_from(" /@;:'\"<>\\\t\n!?#%&*()+=,"))
def test_any_other_character_is_refused(prefix, bad):
    with pytest.raises(ValueError):
        validators.normalise_username(prefix + bad + "abc")


@given(st.text(min_size=0, max_size=40))
@settings(max_examples=300)
def test_normalisation_is_idempotent_and_nfkc(raw):
    try:
        once = validators.normalise_username(raw)
    except ValueError:
        return
    assert validators.normalise_username(once) == once
    assert unicodedata.normalize("NFKC", once) == once
    assert 3 <= len(once) <= 32


@given(
    st.text(alphabet=string.ascii_lowercase, min_size=6, max_size=60),
    st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=20),
    st.text(alphabet=string.digits, min_size=1, max_size=20),
)
def test_passwords_with_every_class_pass(lower, upper, digits):
    password = (upper + lower + digits)[:128]
    if password in validators.common_passwords() or not any(c.isdigit() for c in password):
        return
    assert validators.check_password_strength(password) == password


@given(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=8, max_size=64))
def test_passwords_without_an_upper_case_letter_fail(password):
    with pytest.raises(ValueError):
        validators.check_password_strength(password)


def test_documented_example_passes_and_common_passwords_fail():
    assert validators.check_password_strength("Password123") == "Password123"
    for common in ("Password1", "Qwerty123", "Welcome1", "P@ssw0rd1"):
        with pytest.raises(ValueError, match="too common"):
            validators.check_password_strength(common)
