"""Password hashing with Argon2id (`pip install 'wirehall[passwords]'`).

Hashing is meant to be slow (tens of milliseconds of CPU and 64 MiB of memory), so in
an endpoint run it off the event loop: `await asyncio.to_thread(hash_password, text)`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from wirehall.errors import MissingDependencyError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["hash_password", "needs_rehash", "verify_password"]


@cache
def _hasher() -> PasswordHasher:
    try:
        import argon2
    except ImportError as exc:
        raise MissingDependencyError("argon2-cffi", extra="passwords") from exc
    return argon2.PasswordHasher()  # argon2-cffi's defaults follow RFC 9106


def hash_password(password: str | bytes) -> str:
    """A salted Argon2id hash of `password`, in the PHC string format (`$argon2id$...`).

    Raises:
        MissingDependencyError: argon2-cffi is not installed.
    """
    return _hasher().hash(password)


def verify_password(hash: str, password: str | bytes) -> bool:
    """Whether `password` matches `hash`; False too when `hash` is not a valid Argon2 hash."""
    hasher = _hasher()
    from argon2.exceptions import InvalidHashError, VerificationError

    if not hash.isascii():
        return False  # a PHC string is ASCII; anything else is not a hash we made
    try:
        return hasher.verify(hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hash: str) -> bool:
    """Whether `hash` was made with weaker parameters than today's (or is not a valid hash).

    After a successful `verify_password`, store `hash_password(password)` when this is True.
    """
    hasher = _hasher()
    from argon2.exceptions import InvalidHashError

    if not hash.isascii():
        return True
    try:
        return hasher.check_needs_rehash(hash)
    except (InvalidHashError, ValueError):
        return True
