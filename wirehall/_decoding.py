"""Typed JSON decoding, shared by HTTP bodies and WebSocket `message_type`.

One implementation for both sides: a decoder is built once (when a route or a controller
is registered, so that a type msgspec cannot decode fails then), a value is decoded in a
single pass straight into its type, and a failure is told apart as malformed (not JSON:
HTTP 400) or of the wrong shape (HTTP 422), with the location msgspec reports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from wirehall.errors import ConfigurationError

__all__ = [
    "DECODE_ERRORS",
    "DecodeFailure",
    "convert",
    "describe",
    "failure",
    "json_decoder",
    "location",
]

DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What a decoder may raise on bad input (ValidationError is a DecodeError)."""

_AT = re.compile(r" - at `(\$[^`]*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]*)`")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why a value did not decode: `malformed` (not JSON at all) or of the wrong shape.

    `loc` is the path to the offending value inside the document (field names and list
    indexes), `message` what msgspec said, without its location suffix.
    """

    malformed: bool
    loc: tuple[str | int, ...]
    message: str


def json_decoder(type_: Any, where: str) -> Callable[[bytes | str], Any]:
    """A decoder of JSON into `type_`; a type msgspec cannot decode is a ConfigurationError now."""
    try:
        return msgspec.json.Decoder(type_).decode
    except TypeError as exc:
        raise ConfigurationError(f"{where}: {type_!r} cannot be decoded from JSON: {exc}") from exc


def convert(value: Any, type_: Any) -> Any:
    """`value` (strings off the wire, or a form's fields) converted into `type_`, loosely:
    "5" is an int, "true" a bool. Raises msgspec.ValidationError."""
    return msgspec.convert(value, type_, strict=False)


def describe(exc: BaseException) -> str:
    """What a person should read about a decoding error."""
    if isinstance(exc, RecursionError):
        return "the message is nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "the message is not valid UTF-8"
    return str(exc)


def location(message: str) -> tuple[tuple[str | int, ...], str]:
    """Split msgspec's `... - at `$.items[0].price`` into (("items", 0, "price"), "...")."""
    loc: list[str | int] = []
    found = _AT.search(message)
    if found is not None:
        message = message[: found.start()]
        for name, index in _STEP.findall(found.group(1)[1:]):
            if name:
                loc.append(name)
            else:
                loc.append(int(index) if index.isdigit() else index)
    missing = _MISSING_FIELD.match(message)
    if missing is not None:
        loc.append(missing.group(1))
        message = "field required"
    return tuple(loc), message


def failure(exc: BaseException) -> DecodeFailure:
    """Classify an exception from `DECODE_ERRORS`."""
    if isinstance(exc, msgspec.ValidationError):
        loc, message = location(str(exc))
        return DecodeFailure(False, loc, message)
    return DecodeFailure(True, (), describe(exc))
