"""Endpoint parameters taken from the request: where each comes from and how it is converted.

An endpoint (or a request-scoped dependency) declares what it needs in its signature:

    async def search(q: str, limit: Annotated[int, Meta(ge=1, le=500)] = 10,
                     request_id: Annotated[str | None, Header("x-request-id")] = None,
                     item: Item) -> ...

A plain value (str, int, float, bool, Enum, Literal, UUID, dates, `list[T]` for repeated
keys, `T | None`) comes from the path when its name is a path parameter, else from the
query string; `Header()`, `Cookie()` and `Query(alias=...)` say otherwise. A msgspec Struct,
a dataclass, a TypedDict, a dict or a list of them is the JSON body (`Form()`: a form).
Constraints are msgspec's own (`msgspec.Meta`). Everything is compiled when the route is
registered: a request pays for one conversion per value, through msgspec.

What is bound is described by `ParamInfo` / `EndpointSpec`, for documents generated from
the routes. Bad input raises `RequestValidationError` (HTTP 422, with where and why).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, TypedDict
from urllib.parse import unquote

import msgspec

from wirehall._decoding import DECODE_ERRORS, convert, failure, json_decoder, location
from wirehall.errors import ConfigurationError, HTTPError

__all__ = [
    "MISSING",
    "Body",
    "Cookie",
    "EndpointSpec",
    "ErrorDetail",
    "Form",
    "Header",
    "ParamInfo",
    "ParamSource",
    "Query",
    "RequestValidationError",
    "compile_binder",
    "compile_body",
    "compile_json_body",
    "is_body_type",
    "is_value_type",
    "split_annotation",
]

ParamSource = Literal["path", "query", "header", "cookie", "body"]


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing.MISSING
"""The default of a parameter that has none (it is required)."""


# markers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """`Annotated[int, Query(alias="page-size")]`: a query-string value named `alias`."""

    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Header:
    """`Annotated[str, Header("x-request-id")]`: a request header (default name: the
    parameter's, `_` written `-`); `list[str]` takes every occurrence."""

    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Cookie:
    """`Annotated[str, Cookie("session")]`: a cookie (default name: the parameter's)."""

    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Body:
    """`Annotated[T, Body()]`: the JSON body, even for a type also registered in the container."""


@dataclass(frozen=True, slots=True)
class Form:
    """`Annotated[T, Form()]`: the urlencoded or multipart form's text fields, converted into T."""


_Marker = Query | Header | Cookie | Body | Form
_MARKERS = (Query, Header, Cookie, Body, Form)


# what is bound ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamInfo:
    """One parameter an endpoint takes from the request."""

    name: str
    """The Python parameter name."""
    source: ParamSource
    annotation: Any
    """The type values are converted into, constraints (`Annotated[..., Meta]`) included."""
    default: Any = MISSING
    alias: str = ""
    """The name on the wire (query key, header, cookie); the parameter name by default."""
    constraints: Mapping[str, Any] = field(default_factory=dict)
    """msgspec.Meta constraints (ge, le, min_length, pattern, ...) and descriptions."""
    media_type: str | None = None
    """For the body: application/json, or a form's types."""
    path_first: bool = False
    """A dependency's value: from the path when the route has a parameter of that name."""
    explicit: bool = False
    """Whether a marker (`Query()`, `Body()`, ...) chose the source."""

    @property
    def required(self) -> bool:
        """Whether the request must carry it."""
        return self.default is MISSING

    @property
    def many(self) -> bool:
        """Whether repeated query keys / headers are collected into a list."""
        return _is_sequence(split_annotation(self.annotation)[0])


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """What one endpoint (one route and method) takes and answers, for documents and tools."""

    params: tuple[ParamInfo, ...] = ()
    response_type: Any = MISSING
    """The return annotation; MISSING when there is none."""
    status_code: int | None = None
    """The status of a returned value (None: 200, or 204 for None)."""

    @property
    def body(self) -> ParamInfo | None:
        """The body parameter, if the endpoint takes one."""
        return next((p for p in self.params if p.source == "body"), None)


class ErrorDetail(TypedDict):
    """One problem in a request: where (`["query", "limit"]`, `["body", "items", 0]`) and what."""

    loc: list[str | int]
    msg: str


_WHERE = {"path": "path parameter", "query": "query parameter", "header": "header", "cookie": "cookie"}


class RequestValidationError(HTTPError):
    """The request's values do not fit the endpoint's parameters: HTTP 422.

    The body is `{"error": "<the first problem>", "detail": [{"loc": [...], "msg": ...}]}`.
    """

    def __init__(self, errors: list[ErrorDetail], status: int = 422) -> None:
        self.errors = errors
        super().__init__(status, _summary(errors))


def _summary(errors: list[ErrorDetail]) -> str:
    first = errors[0]
    loc = first["loc"]
    if not loc:
        where = "request"
    elif loc[0] == "body":
        where = "body" if len(loc) == 1 else "body field " + ".".join(str(part) for part in loc[1:])
    else:
        where = f"{_WHERE.get(str(loc[0]), str(loc[0]))} {loc[1]!r}" if len(loc) > 1 else str(loc[0])
        if len(loc) > 2:
            where += " item " + ".".join(str(part) for part in loc[2:])
    text = f"invalid {where}: {first['msg']}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return text


# classification --------------------------------------------------------------------------

_SCALARS: frozenset[Any] = frozenset(
    {
        str,
        int,
        float,
        bool,
        bytes,
        uuid.UUID,
        datetime.date,
        datetime.datetime,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
    }
)
_SEQUENCES = (list, set, frozenset, tuple, Sequence)
_NONE = type(None)


def split_annotation(annotation: Any) -> tuple[Any, _Marker | None, dict[str, Any]]:
    """(the type without our marker, the marker or None, msgspec.Meta constraints)."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, None, {}
    base, *extras = typing.get_args(annotation)
    marker = next((extra for extra in extras if isinstance(extra, _MARKERS)), None)
    kept = [extra for extra in extras if not isinstance(extra, _MARKERS)]
    constraints: dict[str, Any] = {}
    for extra in kept:
        if isinstance(extra, msgspec.Meta):
            constraints.update(_meta_fields(extra))
    stripped = Annotated[(base, *kept)] if kept else base
    return stripped, marker, constraints


def _meta_fields(meta: msgspec.Meta) -> dict[str, Any]:
    names = (
        "gt",
        "ge",
        "lt",
        "le",
        "multiple_of",
        "pattern",
        "min_length",
        "max_length",
        "tz",
        "title",
        "description",
        "examples",
    )
    return {name: getattr(meta, name) for name in names if getattr(meta, name, None) is not None}


def _bare(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _options(annotation: Any) -> list[Any]:
    """The members of a union (`T | None` gives [T]), or [annotation]."""
    annotation = _bare(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is _UNION_TYPE:
        return [_bare(arg) for arg in typing.get_args(annotation) if arg is not _NONE]
    return [annotation]


_UNION_TYPE = type(int | None)


def _is_scalar(annotation: Any) -> bool:
    if annotation in _SCALARS:
        return True
    if typing.get_origin(annotation) is Literal:
        return True
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def _is_sequence(annotation: Any) -> bool:
    options = _options(annotation)
    return len(options) == 1 and typing.get_origin(options[0]) in _SEQUENCES


def is_value_type(annotation: Any) -> bool:
    """Whether `annotation` is a plain value taken from the path, query, a header or a cookie."""
    options = _options(annotation)
    if not options:
        return False
    for option in options:
        if typing.get_origin(option) in _SEQUENCES:
            args = [arg for arg in typing.get_args(option) if arg is not Ellipsis]
            if len(args) != 1 or not _is_scalar(_bare(args[0])):
                return False
        elif not _is_scalar(option):
            return False
    return True


def _is_record(annotation: Any) -> bool:
    return isinstance(annotation, type) and (
        issubclass(annotation, msgspec.Struct)
        or dataclasses.is_dataclass(annotation)
        or typing.is_typeddict(annotation)
    )


def is_body_type(annotation: Any) -> bool:
    """Whether `annotation` is read from the body: a Struct, dataclass, TypedDict, a dict, or a
    list of them (`| None` allowed)."""
    options = _options(annotation)
    if len(options) != 1:
        return bool(options) and all(_is_record(option) for option in options)  # a tagged union
    option = options[0]
    origin = typing.get_origin(option)
    if origin in (dict, Mapping) or option is dict:
        return True
    if origin in _SEQUENCES:
        args = typing.get_args(option)
        return bool(args) and is_body_type(args[0])
    return _is_record(option)


def param_info(
    name: str, annotation: Any, default: Any, marker: _Marker | None, *, path_names: Sequence[str] = ()
) -> ParamInfo:
    """Describe a parameter bound from the request (its source decided by the marker, the
    path parameters, then the type)."""
    stripped, found, constraints = split_annotation(annotation)
    marker = marker if marker is not None else found
    explicit = marker is not None
    source: ParamSource
    alias = name
    media: str | None = None
    if isinstance(marker, Form):
        source, media = "body", _FORM_TYPES
    elif isinstance(marker, Body) or (marker is None and is_body_type(stripped)):
        source, media = "body", "application/json"
    elif isinstance(marker, Header):
        source, alias = "header", marker.alias or name.replace("_", "-")
    elif isinstance(marker, Cookie):
        source, alias = "cookie", marker.alias or name
    elif isinstance(marker, Query):
        source, alias = "query", marker.alias or name
    else:
        source = "path" if name in path_names else "query"
    return ParamInfo(name, source, stripped, default, alias, constraints, media, explicit=explicit)


_FORM_TYPES = "application/x-www-form-urlencoded, multipart/form-data"


# binding ---------------------------------------------------------------------------------


class ValueSource(Protocol):
    """What values are read from: a `Request` or a WebSocket connection (a `Connection`)."""

    scope: Mapping[str, Any]

    @property
    def path_params(self) -> dict[str, Any]: ...

    @property
    def headers(self) -> Any: ...

    @property
    def cookies(self) -> dict[str, str]: ...


class BodySource(ValueSource, Protocol):
    """What a body is read from: a `Request`."""

    async def body(self) -> bytes: ...

    async def form(self) -> Any: ...


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
        lookup = _BOOLS.get

        def to_bool(raw: Any) -> Any:
            return lookup(raw, _SLOW) if type(raw) is str else _SLOW

        return to_bool
    if base is not int:
        return None
    bounds: dict[str, Any] = {}
    for meta in metas:
        for name in ("multiple_of", "pattern", "min_length", "max_length", "tz"):
            if getattr(meta, name, None) is not None:
                return None
        for name in _BOUNDS:
            value = getattr(meta, name, None)
            if value is not None:
                if name in bounds:
                    return None  # two Metas bounding the same side: left to msgspec
                bounds[name] = value
    gt, ge, lt, le = (bounds.get(name) for name in _BOUNDS)

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


def compile_binder(params: Sequence[ParamInfo]) -> Callable[[ValueSource], dict[str, Any]]:
    """A function reading `params` (none of them the body) from a request or connection.

    Raises RequestValidationError listing every value that is missing or does not fit.
    """
    bindings = tuple(
        _Binding(
            p.name,
            p.source,
            p.alias,
            _present(p.annotation),
            p.default,
            p.many,
            p.path_first,
            None if p.many else _quick_converter(_present(p.annotation)),
        )
        for p in params
    )
    query_used = any(b.source == "query" for b in bindings)
    path_used = any(b.source == "path" or b.path_first for b in bindings)

    def bind(source: ValueSource) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors: list[ErrorDetail] | None = None
        query = _query_values(source.scope.get("query_string", b"")) if query_used else _NO_QUERY
        path = source.path_params if path_used else _NO_PATH
        for b in bindings:
            kind = b.source
            raw: Any
            if b.path_first and b.name in path:
                kind = "path"
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
            if b.quick is not None:
                value = b.quick(raw)
                if value is not _SLOW:
                    values[b.name] = value
                    continue
            try:
                values[b.name] = convert(raw, b.type_)
            except msgspec.ValidationError as exc:
                loc, message = location(str(exc))
                if not b.many and isinstance(raw, str):
                    message += f", got {_shown(raw)}"
                errors = errors or []
                errors.append({"loc": [kind, b.alias, *loc], "msg": message})
        if errors:
            raise RequestValidationError(errors)
        return values

    return bind


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
