"""What an endpoint takes from the request: the markers (`Query()`, `Header()`, ...), the
description of each parameter (`ParamInfo`, `EndpointSpec`), the 422 error, and the
classification of annotations into plain values, bodies and the rest. Re-exported by
`wirehall.params`, whose docstring tells the whole story.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import typing
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

import msgspec

from wirehall.errors import HTTPError

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
