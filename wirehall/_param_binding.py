"""Binding plain values (path, query, headers, cookies) to an endpoint's parameters: the
function `compile_binder` builds once per route and a request calls. Re-exported by
`wirehall.params`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import unquote

import msgspec

from wirehall._decoding import convert, location
from wirehall._param_spec import (
    _NONE,
    _UNION_TYPE,
    MISSING,
    ErrorDetail,
    ParamInfo,
    RequestValidationError,
    _bare,
)


class ValueSource(Protocol):
    """What values are read from: a `Request` or a WebSocket connection (a `Connection`)."""

    scope: Mapping[str, Any]

    @property
    def path_params(self) -> dict[str, Any]: ...

    @property
    def headers(self) -> Any: ...

    @property
    def cookies(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class _Binding:
    name: str
    source: str
    alias: str
    type_: Any
    default: Any
    many: bool
    path_first: bool
    quick: Callable[[Any], Any] | None = None
    """Converts the commonest spellings of an int or bool without msgspec (`_SLOW`: ask it)."""


_SLOW = object()
_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_BOUNDS = ("gt", "ge", "lt", "le")
_NOT_QUICK = ("multiple_of", "pattern", "min_length", "max_length", "tz")


def _quick_converter(annotation: Any) -> Callable[[Any], Any] | None:
    """A converter of a query/header/cookie string into an int or a bool giving what
    `convert` gives for the spellings it accepts (`_SLOW` for any other, or a value outside
    the bounds: msgspec then converts it, or words the error); None for other types."""
    base: Any = annotation
    metas: tuple[msgspec.Meta, ...] = ()
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        if not all(isinstance(extra, msgspec.Meta) for extra in extras):
            return None
        metas = tuple(extras)
    if base is bool and not metas:
        return _quick_bool
    if base is not int:
        return None
    bounds = _int_bounds(metas)
    return None if bounds is None else _quick_int(**bounds)


def _quick_bool(raw: Any) -> Any:
    return _BOOLS.get(raw, _SLOW) if type(raw) is str else _SLOW


def _int_bounds(metas: tuple[msgspec.Meta, ...]) -> dict[str, Any] | None:
    """The bounds (gt, ge, lt, le) the Metas set on an int, or None when they constrain it
    otherwise, or bound one side twice: msgspec is then left to judge."""
    bounds: dict[str, Any] = {}
    for meta in metas:
        if any(getattr(meta, name, None) is not None for name in _NOT_QUICK):
            return None
        for name in _BOUNDS:
            value = getattr(meta, name, None)
            if value is not None:
                if name in bounds:
                    return None
                bounds[name] = value
    return bounds


def _quick_int(gt: Any = None, ge: Any = None, lt: Any = None, le: Any = None) -> Callable[[Any], Any]:
    def to_int(raw: Any) -> Any:
        # msgspec takes "5", "-5", "5.0", "1e3" but not "007": only plain digits are quick
        if type(raw) is not str or not (raw.isdigit() and raw.isascii()) or len(raw) > 18:
            return _SLOW
        if raw[0] == "0" and len(raw) > 1:
            return _SLOW
        value = int(raw)
        if (
            (gt is not None and not value > gt)
            or (ge is not None and not value >= ge)
            or (lt is not None and not value < lt)
            or (le is not None and not value <= le)
        ):
            return _SLOW
        return value

    return to_int


def _binding(param: ParamInfo) -> _Binding:
    type_ = _present(param.annotation)
    quick = None if param.many else _quick_converter(type_)
    return _Binding(
        param.name, param.source, param.alias, type_, param.default, param.many, param.path_first, quick
    )


def compile_binder(params: Sequence[ParamInfo]) -> Callable[[ValueSource], dict[str, Any]]:
    """A function reading `params` (none of them the body) from a request or connection.

    Raises RequestValidationError listing every value that is missing or does not fit.
    """
    bindings = tuple(_binding(p) for p in params)
    query_used = any(b.source == "query" for b in bindings)
    path_used = any(b.source == "path" or b.path_first for b in bindings)

    def bind(source: ValueSource) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors: list[ErrorDetail] | None = None
        query = _query_values(source.scope.get("query_string", b"")) if query_used else _NO_QUERY
        path = source.path_params if path_used else _NO_PATH
        for b in bindings:
            kind = "path" if b.path_first and b.name in path else b.source
            raw: Any
            if kind == "query":
                found = query.get(b.alias)
                raw = found if b.many or found is None else found[-1]
            elif kind == "path":
                raw = path.get(b.alias)
            elif kind == "header":
                raw = source.headers.getlist(b.alias) if b.many else source.headers.get(b.alias)
            else:
                raw = source.cookies.get(b.alias)
            if raw is None or (b.many and not raw):
                if b.default is MISSING:
                    errors = errors or []
                    errors.append({"loc": [kind, b.alias], "msg": "field required"})
                else:
                    values[b.name] = b.default
                continue
            if type(raw) is b.type_:  # a plain str, or a path value its converter made already
                values[b.name] = raw
                continue
            value = _SLOW if b.quick is None else b.quick(raw)
            if value is not _SLOW:
                values[b.name] = value
                continue
            try:
                values[b.name] = convert(raw, b.type_)
            except msgspec.ValidationError as exc:
                errors = errors or []
                errors.append(_invalid(b, kind, raw, exc))
        if errors:
            raise RequestValidationError(errors)
        return values

    return bind


def _invalid(b: _Binding, kind: str, raw: Any, exc: msgspec.ValidationError) -> ErrorDetail:
    """The problem with a value msgspec refused: where, and why (with the value when it is text)."""
    loc, message = location(str(exc))
    if not b.many and isinstance(raw, str):
        message += f", got {_shown(raw)}"
    return {"loc": [kind, b.alias, *loc], "msg": message}


_NO_QUERY: dict[str, list[str]] = {}
_NO_PATH: dict[str, Any] = {}


def _query_values(raw: bytes) -> dict[str, list[str]]:
    """The query string's values by name: what `QueryParams.from_string` reads (parse_qsl with
    blank values kept), without unquoting the parts that need none."""
    found: dict[str, list[str]] = {}
    if not raw:
        return found
    for part in raw.decode("latin-1").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name = unquote(name.replace("+", " "))
            value = unquote(value.replace("+", " "))
        values = found.get(name)
        if values is None:
            found[name] = [value]
        else:
            values.append(value)
    return found


def _present(annotation: Any) -> Any:
    """What a value that is there converts into: `T | None` is T (None stands for absent,
    and the text "null" is not None)."""
    bare = _bare(annotation)
    origin = typing.get_origin(bare)
    if origin is typing.Union or origin is _UNION_TYPE:
        members = [arg for arg in typing.get_args(bare) if arg is not _NONE]
        if len(members) == 1:
            return members[0]
        return typing.Union[tuple(members)]  # noqa: UP007 - built from a tuple at run time
    return annotation


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 24 else raw[:24] + "…")
