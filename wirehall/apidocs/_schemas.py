"""JSON Schemas of Python types through msgspec, shared by the OpenAPI and AsyncAPI documents."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

__all__ = ["describe_types", "path_parameters", "tagged_unions_as_one_of"]

logger = logging.getLogger(__name__)

_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")

_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
    "path": {"type": "string"},
}


def path_parameters(template: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """`/items/{id:int}` -> (`/items/{id}`, [("id", the converter's schema)])."""
    params = [
        (match.group(1), dict(_CONVERTER_SCHEMAS.get(match.group(2) or "str", {"type": "string"})))
        for match in _PATH_PARAM.finditer(template)
    ]
    return _PATH_PARAM.sub(lambda match: "{" + match.group(1) + "}", template), params


def describe_types(
    types: Sequence[Any], ref_template: str
) -> tuple[list[dict[str, Any] | None], dict[str, Any]]:
    """The schema of each type (None where msgspec has none: a `Response`, a custom class) and
    the named components they refer to, built in one pass so shared Structs appear once."""
    supported: list[Any] = []
    where: list[int | None] = []
    for annotation in types:
        try:
            msgspec.json.schema_components([annotation], ref_template=ref_template)
        except (TypeError, ValueError) as exc:
            logger.debug("no JSON Schema for %r: %s", annotation, exc)
            where.append(None)
        else:
            where.append(len(supported))
            supported.append(annotation)
    schemas, components = msgspec.json.schema_components(supported, ref_template=ref_template)
    found = [dict(schemas[index]) if index is not None else None for index in where]
    return found, dict(components)


def tagged_unions_as_one_of(value: Any, discriminator: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """`value` with each tagged union's `anyOf` written `oneOf` (exactly one member fits, by
    its tag); `discriminator` rewrites the discriminator object where a format wants another."""
    if isinstance(value, list):
        return [tagged_unions_as_one_of(item, discriminator) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: tagged_unions_as_one_of(item, discriminator) for key, item in value.items()}
    found = out.get("discriminator")
    if isinstance(found, dict) and "anyOf" in out:
        out["oneOf"] = out.pop("anyOf")
        if discriminator is not None:
            out["discriminator"] = discriminator(found)
    return out
