from __future__ import annotations

import sys

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.errors import MissingDependencyError
from wirehall.security import passwords
from wirehall.security.passwords import hash_password, needs_rehash, verify_password


def test_hash_and_verify() -> None:
    hashed = hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert verify_password(hashed, "correct horse battery staple")
    assert not verify_password(hashed, "correct horse battery stapler")
    assert not verify_password(hashed, "")
    assert not needs_rehash(hashed)


def test_same_password_gets_different_salts() -> None:
    assert hash_password("pw") != hash_password("pw")


def test_bytes_and_unicode_passwords() -> None:
    hashed = hash_password("pässwörd ✓")
    assert verify_password(hashed, "pässwörd ✓")
    assert verify_password(hashed, "pässwörd ✓".encode())
    assert not verify_password(hashed, "passwort ✓")


def test_weaker_hash_needs_rehash() -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert verify_password(weak, "pw")
    assert needs_rehash(weak)


@pytest.mark.parametrize(
    "bad",
    ["", "x", "$argon2id$", "$argon2id$v=19$m=1,t=1,p=1$xx$yy", "é", "$2b$12$bcrypt.hash"],
)
def test_invalid_hashes_never_verify(bad: str) -> None:
    assert not verify_password(bad, "pw")
    assert needs_rehash(bad)


@settings(max_examples=100, deadline=None)
@given(hashed=st.text(max_size=120), password=st.text(max_size=20))
def test_generated_hashes_never_raise(hashed: str, password: str) -> None:
    assert verify_password(hashed, password) is False
    assert isinstance(needs_rehash(hashed), bool)


def test_missing_argon2_is_a_missing_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    passwords._hasher.cache_clear()
    monkeypatch.setitem(sys.modules, "argon2", None)
    try:
        with pytest.raises(MissingDependencyError, match=r"wirehall\[passwords\]"):
            hash_password("pw")
        with pytest.raises(ImportError):  # MissingDependencyError is also an ImportError
            verify_password("x", "pw")
    finally:
        passwords._hasher.cache_clear()
