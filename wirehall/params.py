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

This module is the public face; the work is done in `_param_spec` (markers, `ParamInfo`,
classification), `_param_binding` (path, query, header and cookie values) and `_param_body`.
"""

from __future__ import annotations

from wirehall._param_binding import ValueSource as ValueSource
from wirehall._param_binding import compile_binder
from wirehall._param_body import BodySource as BodySource
from wirehall._param_body import compile_body, compile_json_body
from wirehall._param_spec import (
    MISSING,
    Body,
    Cookie,
    EndpointSpec,
    ErrorDetail,
    Form,
    Header,
    ParamInfo,
    ParamSource,
    Query,
    RequestValidationError,
    is_body_type,
    is_value_type,
    split_annotation,
)
from wirehall._param_spec import param_info as param_info

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
