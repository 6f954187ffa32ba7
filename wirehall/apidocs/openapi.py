"""The OpenAPI 3.1 document of an app's HTTP routes, built from their `EndpointSpec`s.

Paths, methods, an operationId from each route's name, parameters (path, query, header,
cookie) with their msgspec constraints, request bodies, the response of the return
annotation with the route's status code, and the 422 answer's shape as a component.
Schemas come from msgspec (`msgspec.json.schema_components`).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterable
from typing import Any

import msgspec

from wirehall.apidocs._schemas import describe_types, path_parameters, tagged_unions_as_one_of
from wirehall.http.controller import HTTPController
from wirehall.http.response import Response
from wirehall.params import MISSING, EndpointSpec, ParamInfo
from wirehall.routing import RouteInfo

__all__ = ["OPENAPI_VERSION", "VALIDATION_ERROR_SCHEMA", "openapi_document"]

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{name}"
_FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ValidationError",
    "description": "The request's values do not fit the endpoint: where (`loc`) and why (`msg`).",
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "The first problem, for a person."},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                        "description": 'Where: ["query", "limit"], ["body", "items", 0, "price"].',
                    },
                    "msg": {"type": "string"},
                },
                "required": ["loc", "msg"],
            },
        },
    },
    "required": ["error", "detail"],
}
"""The body of a 422 answer: `{"error": ..., "detail": [{"loc": [...], "msg": ...}]}`."""

_ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "description": "An error answer: what was wrong, for a person.",
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_VALIDATION_REF = {"$ref": "#/components/schemas/ValidationError"}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def openapi_document(
    routes: Iterable[RouteInfo],
    *,
    title: str,
    version: str,
    exclude: Collection[Any] = (),
    servers: Iterable[str] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing the HTTP `routes` (endpoints in `exclude` left out)."""
    operations = [
        route
        for route in routes
        if route.method != "WEBSOCKET" and route.spec is not None and route.endpoint not in exclude
    ]
    # every type the document shows, described in one pass so that shared Structs appear once
    types: list[Any] = []
    for route in operations:
        assert route.spec is not None
        types.extend(param.annotation for param in route.spec.params)
        types.append(_response_type(route.spec))
    schemas, components = describe_types(types, _REF)
    found = iter(schemas)
    methods_per_path: dict[str, int] = {}
    for route in operations:
        methods_per_path[route.path] = methods_per_path.get(route.path, 0) + 1
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for route in operations:
        spec = route.spec
        assert spec is not None
        param_schemas = [next(found) for _ in spec.params]
        response_schema = next(found)
        path, path_params = path_parameters(route.path)
        operation: dict[str, Any] = {
            "operationId": _operation_id(route, methods_per_path[route.path] > 1, used_ids)
        }
        operation.update(_summary(route))
        parameters = _parameters(spec, param_schemas, path_params)
        if parameters:
            operation["parameters"] = parameters
        body = spec.body
        if body is not None:
            operation["requestBody"] = _request_body(body, param_schemas[spec.params.index(body)])
        operation["responses"] = _responses(
            spec, response_schema, own_answer=_answers_invalid_input(route.endpoint)
        )
        paths.setdefault(path, {})[route.method.lower()] = operation
    components = dict(components)
    components["ValidationError"] = VALIDATION_ERROR_SCHEMA
    components["Error"] = _ERROR_SCHEMA
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
    }
    chosen = [{"url": url} for url in servers]
    if chosen:
        document["servers"] = chosen
    document["paths"] = paths
    document["components"] = {"schemas": dict(sorted(components.items()))}
    return tagged_unions_as_one_of(document)  # type: ignore[no-any-return]


def _response_type(spec: EndpointSpec) -> Any:
    returned = spec.response_type
    if returned is MISSING or (inspect.isclass(returned) and issubclass(returned, Response)):
        return object  # no schema: a Response of its own, or nothing said
    return returned


def _operation_id(route: RouteInfo, shared: bool, used: set[str]) -> str:
    base = route.name or getattr(route.endpoint, "__name__", None) or "operation"
    candidate = f"{base}_{route.method.lower()}" if shared else base
    chosen, n = candidate, 2
    while chosen in used:
        chosen, n = f"{candidate}_{n}", n + 1
    used.add(chosen)
    return chosen


def _summary(route: RouteInfo) -> dict[str, str]:
    target = route.endpoint
    if inspect.isclass(target):
        target = getattr(target, route.method.lower(), target)
    doc = inspect.getdoc(target)
    if not doc:
        return {}
    first, _, rest = doc.partition("\n\n")
    found = {"summary": " ".join(first.split())}
    if rest.strip():
        found["description"] = rest.strip()
    return found


def _parameters(
    spec: EndpointSpec,
    schemas: list[dict[str, Any] | None],
    path_params: list[tuple[str, dict[str, Any]]],
) -> list[dict[str, Any]]:
    in_path = {name for name, _ in path_params}
    by_place: dict[tuple[str, str], dict[str, Any]] = {}
    for name, converted in path_params:
        by_place["path", name] = {"name": name, "in": "path", "required": True, "schema": converted}
    for param, schema in zip(spec.params, schemas, strict=True):
        source = param.source
        if source == "body":
            continue
        if param.path_first and param.name in in_path:
            source = "path"
        name = param.name if source == "path" else param.alias
        if source == "path" and name not in in_path:
            continue  # a path value the template does not have: the route never supplies it
        entry = _parameter(param, source, name, schema)
        if source == "path":
            # the endpoint's type says more than the converter's, but only what the
            # converter matches gets there (`{id:int}` takes no "-1")
            converted = by_place["path", name]["schema"]
            if converted.get("type") == entry["schema"].get("type"):
                entry["schema"] = {**converted, **entry["schema"]}
            by_place["path", name] = entry
        else:
            by_place.setdefault((source, name), entry)
    return list(by_place.values())


def _parameter(param: ParamInfo, source: str, name: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    shown = dict(schema) if schema is not None else {}
    default = _json_value(param.default)
    if default is not MISSING:
        shown["default"] = default
    entry: dict[str, Any] = {
        "name": name,
        "in": source,
        "required": source == "path" or param.required,
        "schema": shown,
    }
    description = param.constraints.get("description")
    if isinstance(description, str):
        entry["description"] = description
    if param.many and source == "query":
        entry["style"], entry["explode"] = "form", True  # ?tag=a&tag=b
    return entry


def _json_value(value: Any) -> Any:
    if value is MISSING:
        return MISSING
    try:
        return msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError):
        return MISSING


def _request_body(param: ParamInfo, schema: dict[str, Any] | None) -> dict[str, Any]:
    shown = schema if schema is not None else {}
    media = ("application/json",) if param.media_type == "application/json" else _FORM_MEDIA_TYPES
    return {
        "required": param.required,
        "content": {media_type: {"schema": shown} for media_type in media},
    }


def _responses(spec: EndpointSpec, schema: dict[str, Any] | None, *, own_answer: bool) -> dict[str, Any]:
    returned = spec.response_type
    if returned is type(None):
        returned = None
    status = spec.status_code
    if status is None:
        status = 204 if returned is None else 200
    answer: dict[str, Any] = {"description": _REASONS.get(status, "The answer")}
    if returned is not None and status != 204 and schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {str(status): answer}
    body = spec.body
    if body is not None and body.media_type == "application/json":
        responses["400"] = {
            "description": "The body is not JSON",
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
    if spec.params and own_answer:
        responses["4XX"] = {
            "description": "A value does not fit: as the controller's on_invalid_input answers"
        }
    elif spec.params:
        responses["422"] = {
            "description": "A value does not fit",
            "content": {"application/json": {"schema": _VALIDATION_REF}},
        }
    return responses


def _answers_invalid_input(endpoint: Any) -> bool:
    """Whether an HTTPController answers bad input itself (`on_invalid_input` overridden)."""
    return (
        inspect.isclass(endpoint)
        and issubclass(endpoint, HTTPController)
        and endpoint.on_invalid_input is not HTTPController.on_invalid_input
    )


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
}
