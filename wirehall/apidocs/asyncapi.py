"""The AsyncAPI 3.0 document of an app's WebSocket routes.

Each route is a channel whose address is the path template, with its path parameters.
What the app receives is the controller's `message_type`, what it sends its `sends`: a
tagged union is one message per member (AsyncAPI 3's way of saying "one of these"), each
with its payload's JSON Schema from msgspec. A route without a `WebSocketController` (an
async function) is a channel with no messages described.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Collection, Iterable
from typing import Any

from wirehall.apidocs._schemas import describe_types, path_parameters, tagged_unions_as_one_of
from wirehall.routing import RouteInfo
from wirehall.websocket.controller import WebSocketController

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
_REF = "#/components/schemas/{name}"
_RAW: dict[str, dict[str, Any]] = {
    "text": {"type": "string", "description": "A text frame, as sent."},
    "bytes": {"type": "string", "format": "binary", "description": "A binary frame, as sent."},
}


def asyncapi_document(
    routes: Iterable[RouteInfo], *, title: str, version: str, exclude: Collection[Any] = ()
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document describing the WebSocket `routes` (endpoints in `exclude` left out)."""
    sockets = [route for route in routes if route.method == "WEBSOCKET" and route.endpoint not in exclude]
    # (route, direction, [(message name or None, type)]) for every message type the document shows
    wanted: list[tuple[RouteInfo, str, list[Any]]] = []
    all_types: list[Any] = []
    for route in sockets:
        endpoint = route.endpoint
        if not (inspect.isclass(endpoint) and issubclass(endpoint, WebSocketController)):
            continue
        for action, declared in (("receive", endpoint.message_type), ("send", endpoint.sends)):
            if declared is None:
                continue
            members = _members(declared)
            wanted.append((route, action, members))
            all_types.extend(members)
    schemas, components = describe_types(all_types, _REF)
    found = iter(schemas)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channel_ids: dict[int, str] = {}
    for route in sockets:
        channel_id = _unique(route.name or _endpoint_name(route.endpoint) or "channel", channels)
        channel_ids[id(route)] = channel_id
        address, params = path_parameters(route.path)
        channel: dict[str, Any] = {"address": address, "messages": {}}
        doc = _doc(route.endpoint)
        if doc:
            channel["description"] = doc
        if params:
            channel["parameters"] = {
                name: {"description": f"path parameter ({schema.get('type', 'string')})"}
                for name, schema in params
            }
        channels[channel_id] = channel
        endpoint = route.endpoint
        if (
            inspect.isclass(endpoint)
            and issubclass(endpoint, WebSocketController)
            and endpoint.message_type is None
        ):
            _raw_operation(endpoint, channel_id, channel, operations, messages)
    for route, action, members in wanted:
        channel_id = channel_ids[id(route)]
        channel = channels[channel_id]
        refs = []
        for member in members:
            schema = next(found)
            name = _message_name(member, schema, route, action)
            messages.setdefault(
                name, {"name": name, "contentType": "application/json", "payload": schema or {}}
            )
            channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
            refs.append({"$ref": f"#/channels/{channel_id}/messages/{name}"})
        operations[f"{channel_id}_{action}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": _ACTION_SUMMARY[action],
            "messages": refs,
        }
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": title, "version": version},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": dict(sorted(messages.items())),
            "schemas": dict(sorted(components.items())),
        },
    }
    # an AsyncAPI schema's discriminator is the tag's property name, not OpenAPI's object
    return tagged_unions_as_one_of(document, lambda found: found.get("propertyName"))  # type: ignore[no-any-return]


_ACTION_SUMMARY = {
    "receive": "What a client sends; the app receives it.",
    "send": "What the app sends to a client.",
}


def _raw_operation(
    cls: type[WebSocketController],
    channel_id: str,
    channel: dict[str, Any],
    operations: dict[str, Any],
    messages: dict[str, Any],
) -> None:
    """Frames received undecoded (no `message_type`): text, bytes or either, as `receives` says."""
    kinds = ("text", "bytes") if cls.receives == "any" else (cls.receives,)
    refs = []
    for kind in kinds:
        name = f"{kind.capitalize()}Frame"
        media = "text/plain" if kind == "text" else "application/octet-stream"
        messages.setdefault(name, {"name": name, "contentType": media, "payload": _RAW[kind]})
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        refs.append({"$ref": f"#/channels/{channel_id}/messages/{name}"})
    operations[f"{channel_id}_receive"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "summary": _ACTION_SUMMARY["receive"],
        "messages": refs,
    }


def _members(declared: Any) -> list[Any]:
    """A union's members (None left out), else [declared]."""
    origin = typing.get_origin(declared)
    if origin is typing.Union or origin is types.UnionType:
        return [arg for arg in typing.get_args(declared) if arg is not type(None)]
    return [declared]


def _message_name(member: Any, schema: dict[str, Any] | None, route: RouteInfo, action: str) -> str:
    ref = (schema or {}).get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    base = route.name or _endpoint_name(route.endpoint) or "Channel"
    return f"{base}{'Received' if action == 'receive' else 'Sent'}"


def _endpoint_name(endpoint: Any) -> str | None:
    name = getattr(endpoint, "__name__", None)
    return name if isinstance(name, str) else None


def _doc(target: Any) -> str | None:
    own: Any = None
    if inspect.isclass(target):  # its own docstring or a subclass's, never the framework's
        for cls in target.__mro__:
            if cls is WebSocketController:
                break
            own = own or vars(cls).get("__doc__")
    else:
        own = getattr(target, "__doc__", None)
    doc = inspect.cleandoc(own) if isinstance(own, str) else ""
    if not doc:
        return None
    return " ".join(doc.partition("\n\n")[0].split())


def _unique(candidate: str, taken: dict[str, Any]) -> str:
    chosen, n = candidate, 2
    while chosen in taken:
        chosen, n = f"{candidate}_{n}", n + 1
    return chosen
