"""The AsyncAPI 3.0 document: valid against the AsyncAPI 3.0.0 JSON Schema (vendored beside
this file, with its license), one channel per WebSocket route, what it receives and sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from tests.apidocs._strategies import from_schema
from wirehall import WebSocketController, WebSocketHandler, Wirehall
from wirehall.apidocs import asyncapi_document
from wirehall.testing import SyncTestClient

SCHEMA = json.loads((Path(__file__).parent / "asyncapi-3.0.0.schema.json").read_text())


def check(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(document)


class Say(msgspec.Struct, tag="say", tag_field="type"):
    """Post text to the room."""

    text: str


class Leave(msgspec.Struct, tag="leave", tag_field="type"):
    pass


class Said(msgspec.Struct, tag="said", tag_field="type"):
    user: str
    text: str


class Kicked(msgspec.Struct, tag="kicked", tag_field="type"):
    reason: str


class Tree(msgspec.Struct, tag="tree", tag_field="type"):
    """A frame holding a tagged union: its discriminator is written the AsyncAPI way."""

    child: Said | Kicked


def new_app(**options: Any) -> Wirehall:
    app = Wirehall(backplane="memory://", title="rooms", version="3", **options)

    @app.websocket("/ws/{room}/{seat:int}", name="room")
    class Room(WebSocketController):
        """One seat in one room."""

        message_type = Say | Leave
        sends = Said | Kicked | Tree

    @app.websocket("/raw")
    class Raw(WebSocketController):
        receives = "any"

    @app.websocket("/echo")
    async def echo(ws: WebSocketHandler) -> None:
        pass

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {}

    return app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    with SyncTestClient(new_app()) as client:
        answer = client.get("/asyncapi.json")
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {"title": "rooms", "version": "3"}
    check(document)


def test_an_invalid_document_is_caught_by_the_schema(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    broken["operations"]["room_receive"]["action"] = "listen"
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


def test_each_websocket_route_is_a_channel_at_its_template(document: dict[str, Any]) -> None:
    channels = document["channels"]
    assert set(channels) == {"room", "Raw", "echo"}  # the HTTP route is not here
    room = channels["room"]
    assert room["address"] == "/ws/{room}/{seat}"
    assert set(room["parameters"]) == {"room", "seat"}
    assert room["description"] == "One seat in one room."
    assert channels["echo"]["messages"] == {}  # a function endpoint says nothing of its messages


def test_a_tagged_union_is_one_message_per_member(document: dict[str, Any]) -> None:
    received = document["operations"]["room_receive"]
    assert received["action"] == "receive"
    assert received["channel"] == {"$ref": "#/channels/room"}
    assert received["messages"] == [
        {"$ref": "#/channels/room/messages/Say"},
        {"$ref": "#/channels/room/messages/Leave"},
    ]
    sent = document["operations"]["room_send"]
    assert sent["action"] == "send"
    assert [ref["$ref"].rsplit("/", 1)[-1] for ref in sent["messages"]] == ["Said", "Kicked", "Tree"]
    say = document["components"]["messages"]["Say"]
    assert say["payload"] == {"$ref": "#/components/schemas/Say"}
    schema = document["components"]["schemas"]["Say"]
    assert schema["properties"]["type"] == {"enum": ["say"]}
    assert schema["description"] == "Post text to the room."


def test_a_union_inside_a_payload_is_a_one_of_with_the_tag_as_discriminator(document: dict[str, Any]) -> None:
    child = document["components"]["schemas"]["Tree"]["properties"]["child"]
    assert child["discriminator"] == "type"
    assert [option["$ref"] for option in child["oneOf"]] == [
        "#/components/schemas/Said",
        "#/components/schemas/Kicked",
    ]


def test_raw_frames_are_text_and_bytes_messages(document: dict[str, Any]) -> None:
    raw = document["operations"]["Raw_receive"]
    assert [ref["$ref"] for ref in raw["messages"]] == [
        "#/channels/Raw/messages/TextFrame",
        "#/channels/Raw/messages/BytesFrame",
    ]
    assert document["components"]["messages"]["BytesFrame"]["contentType"] == "application/octet-stream"
    assert "Raw_send" not in document["operations"]  # it declares nothing it sends


def test_messages_drawn_from_the_payload_schemas_decode_into_the_message_type(
    document: dict[str, Any],
) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    payloads = [
        document["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]["payload"]
        for ref in document["operations"]["room_receive"]["messages"]
    ]
    decoder = msgspec.json.Decoder(Say | Leave)

    @settings(max_examples=50, deadline=None)
    @given(st.one_of([from_schema(payload, document) for payload in payloads]))
    def decodes(value: Any) -> None:
        decoder.decode(msgspec.json.encode(value))

    decodes()


def test_the_chat_example_document_is_valid_and_names_its_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.chat import create_app

    monkeypatch.setenv("CHAT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    app = create_app()
    found = asyncapi_document(app.router.routes(), title="chat", version="1")
    check(found)
    channel = found["channels"]["ChatRoom"]
    assert channel["address"] == "/ws/{room}"
    assert set(channel["messages"]) == {
        "SendText",
        "Ping",
        "Welcome",
        "Presence",
        "Message",
        "Pong",
        "ErrorFrame",
    }
    sent = found["operations"]["ChatRoom_send"]["messages"]
    assert len(sent) == 5


def test_asyncapi_url_can_be_moved_or_turned_off() -> None:
    app = new_app(asyncapi_url="/spec/async.json")
    with SyncTestClient(app) as client:
        assert client.get("/asyncapi.json").status_code == 404
        check(client.get("/spec/async.json").json())
    with SyncTestClient(Wirehall(backplane="memory://", asyncapi_url=None)) as client:
        assert client.get("/asyncapi.json").status_code == 404
