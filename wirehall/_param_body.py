"""Reading an endpoint's body: JSON decoded straight into its type, or a form's text fields
converted into it. Re-exported by `wirehall.params`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from wirehall._decoding import DECODE_ERRORS, convert, failure, json_decoder, location
from wirehall._param_binding import ValueSource
from wirehall._param_spec import MISSING, ParamInfo, RequestValidationError
from wirehall.errors import ConfigurationError, HTTPError


class BodySource(ValueSource, Protocol):
    """What a body is read from: a `Request`."""

    async def body(self) -> bytes: ...

    async def form(self) -> Any: ...


def compile_body(param: ParamInfo, where: str) -> Callable[[BodySource], Awaitable[Any]]:
    """A coroutine function reading `param` from the body: JSON decoded straight into its type
    (one pass), or a form's fields converted into it. Not JSON -> 400, wrong shape -> 422."""
    if param.media_type == "application/json":
        decode = compile_json_body(param, where)

        async def read_json(source: BodySource) -> Any:
            return decode(await source.body())

        return read_json
    return _form_reader(param, where)


def compile_json_body(param: ParamInfo, where: str) -> Callable[[bytes], Any]:
    """What `compile_body` reads a JSON body with, from the body's bytes: the value of its
    type, or its default when the body is empty. Not JSON -> 400, wrong shape -> 422."""
    decode = json_decoder(param.annotation, where)
    default = param.default

    def decode_json(body: bytes) -> Any:
        if not body or body.isspace():
            if default is not MISSING:
                return default
            raise HTTPError(400, "the request body is empty; send a JSON document")
        try:
            return decode(body)
        except DECODE_ERRORS as exc:
            found = failure(exc)
            if found.malformed:
                raise HTTPError(400, f"the request body is not valid JSON: {found.message}") from None
            raise RequestValidationError([{"loc": ["body", *found.loc], "msg": found.message}]) from None

    return decode_json


def _form_reader(param: ParamInfo, where: str) -> Callable[[BodySource], Awaitable[Any]]:
    target = param.annotation
    try:
        info = msgspec.inspect.type_info(target)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {target!r} cannot be read from a form: {exc}") from exc
    fields = getattr(info, "fields", None)
    if fields is None:
        raise ConfigurationError(
            f"{where}: a Form() parameter must be a msgspec Struct, a dataclass or a TypedDict, not {target!r}"
        )
    many = frozenset(
        f.encode_name
        for f in fields
        if isinstance(f.type, msgspec.inspect.ListType | msgspec.inspect.SetType)
    )
    names = frozenset(f.encode_name for f in fields)

    async def read_form(source: BodySource) -> Any:
        form = await source.form()
        data: dict[str, Any] = {}
        for key in names:
            values = [value for value in form.getlist(key) if isinstance(value, str)]
            if values:
                data[key] = values if key in many else values[-1]
        try:
            return convert(data, target)
        except msgspec.ValidationError as exc:
            loc, message = location(str(exc))
            raise RequestValidationError([{"loc": ["body", *loc], "msg": message}]) from None

    return read_form
