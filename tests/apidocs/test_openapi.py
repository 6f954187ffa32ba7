"""The OpenAPI 3.1 document: valid against the OpenAPI 3.1 schema, true to the routes, and a
round trip (requests built from its schemas are accepted; ones outside them get 422)."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from tests.apidocs._strategies import from_schema
from wirehall import Cookie, Form, Header, HTTPController, Query, Response, Wirehall
from wirehall.apidocs import VALIDATION_ERROR_SCHEMA, openapi_document
from wirehall.testing import SyncTestClient


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(msgspec.Struct):
    """Something for sale."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    price: Annotated[float, msgspec.Meta(ge=0, le=1000)]
    tags: list[str] = []


class Login(msgspec.Struct):
    user: str
    password: str


def new_app(**options: Any) -> Wirehall:
    app = Wirehall(backplane="memory://", title="shop", version="2.1", **options)

    @app.get("/search", name="search_items")
    async def search(
        q: Annotated[str, msgspec.Meta(max_length=30)],
        limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 10,
        color: Color | None = None,
        order: Literal["asc", "desc"] = "asc",
        tag: list[str] | None = None,
        page_size: Annotated[int, Query(alias="page-size")] = 20,
        request_id: Annotated[str | None, Header("x-request-id")] = None,
        session: Annotated[str | None, Cookie("sid")] = None,
    ) -> dict[str, Any]:
        """Find items.

        By name, colour and tag.
        """
        return {"q": q, "limit": limit}

    @app.post("/items/{id:int}", status_code=201)
    async def add_item(id: int, item: Item, verbose: bool = False) -> Item:
        return item

    @app.post("/login")
    async def login(form: Annotated[Login, Form()]) -> None:
        return None

    @app.route("/notes/{id:int}", name="note")
    class Note(HTTPController):
        async def get(self, id: int) -> dict[str, int]:
            """Read a note."""
            return {"id": id}

        async def delete(self) -> Response:
            return self.send_error(403, "notes are forever")

    return app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    with SyncTestClient(new_app()) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()  # type: ignore[no-any-return]


def _parameters(document: dict[str, Any], path: str, method: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in document["paths"][path][method].get("parameters", [])}


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {"title": "shop", "version": "2.1"}
    validate(document)  # raises on any departure from the OpenAPI 3.1 schema


def test_paths_are_templates_without_converters_and_the_documents_are_not_listed(
    document: dict[str, Any],
) -> None:
    assert set(document["paths"]) == {"/search", "/items/{id}", "/login", "/notes/{id}"}
    assert set(document["paths"]["/notes/{id}"]) == {"get", "delete"}


def test_operation_ids_come_from_route_names(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert paths["/search"]["get"]["operationId"] == "search_items"
    assert paths["/items/{id}"]["post"]["operationId"] == "add_item"
    # one name for a path with two methods: each method's id says which
    assert paths["/notes/{id}"]["get"]["operationId"] == "note_get"
    assert paths["/notes/{id}"]["delete"]["operationId"] == "note_delete"


def test_docstrings_give_summary_and_description(document: dict[str, Any]) -> None:
    search = document["paths"]["/search"]["get"]
    assert search["summary"] == "Find items."
    assert search["description"] == "By name, colour and tag."
    assert document["paths"]["/notes/{id}"]["get"]["summary"] == "Read a note."


def test_parameters_carry_their_place_type_constraints_and_defaults(document: dict[str, Any]) -> None:
    params = _parameters(document, "/search", "get")
    assert params["q"] == {
        "name": "q",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "maxLength": 30},
    }
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 10}
    assert params["limit"]["required"] is False
    assert params["order"]["schema"]["enum"] == ["asc", "desc"]
    assert params["tag"]["style"] == "form"
    assert params["tag"]["explode"] is True
    assert params["page-size"]["in"] == "query"
    assert params["x-request-id"]["in"] == "header"
    assert params["sid"]["in"] == "cookie"
    color = params["color"]["schema"]
    assert "$ref" in str(color)
    assert sorted(document["components"]["schemas"]["Color"]["enum"]) == ["blue", "red"]


def test_path_parameters_are_required_and_typed(document: dict[str, Any]) -> None:
    item = _parameters(document, "/items/{id}", "post")
    # what the endpoint takes, within what the converter matches
    assert item["id"] == {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
    # a method that does not take the path value still documents it (from the converter)
    note = _parameters(document, "/notes/{id}", "delete")
    assert note["id"]["schema"] == {"type": "integer", "minimum": 0}


def test_bodies_and_responses(document: dict[str, Any]) -> None:
    add = document["paths"]["/items/{id}"]["post"]
    assert add["requestBody"] == {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}},
    }
    assert add["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Item"
    }
    assert add["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationError"
    }
    assert "400" in add["responses"]  # not JSON at all
    item = document["components"]["schemas"]["Item"]
    assert item["properties"]["price"] == {"type": "number", "minimum": 0, "maximum": 1000}
    assert item["description"] == "Something for sale."
    login = document["paths"]["/login"]["post"]
    assert set(login["requestBody"]["content"]) == {
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    assert login["responses"]["204"] == {"description": "No Content"}
    # a Response of its own: the status, no schema claimed
    assert document["paths"]["/notes/{id}"]["delete"]["responses"] == {"200": {"description": "OK"}}


def test_the_422_component_describes_what_the_app_answers(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["ValidationError"] == VALIDATION_ERROR_SCHEMA
    with SyncTestClient(new_app()) as client:
        answer = client.get("/search", params={"q": "x", "limit": "0"})
        assert answer.status_code == 422
        jsonschema.validate(answer.json(), VALIDATION_ERROR_SCHEMA)
        answer = client.post("/items/3", json={"name": "", "price": -1})
        assert answer.status_code == 422
        jsonschema.validate(answer.json(), VALIDATION_ERROR_SCHEMA)


def test_urls_can_be_moved_or_turned_off() -> None:
    with SyncTestClient(new_app(openapi_url="/api/spec.json")) as client:
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/api/spec.json").json()["openapi"] == "3.1.0"
    with SyncTestClient(new_app(openapi_url=None, docs_url=None, asyncapi_url=None)) as client:
        for path in ("/openapi.json", "/docs", "/asyncapi.json"):
            assert client.get(path).status_code == 404


def test_a_route_of_the_app_at_the_same_path_wins() -> None:
    app = new_app()

    @app.get("/openapi.json")
    async def mine() -> dict[str, str]:
        return {"mine": "yes"}

    with SyncTestClient(app) as client:
        assert client.get("/openapi.json").json() == {"mine": "yes"}


def test_a_mounted_app_names_its_prefix_as_server() -> None:
    outer = Wirehall(backplane="memory://", openapi_url=None, docs_url=None, asyncapi_url=None)
    inner = new_app()
    outer.mount("/shop", inner)
    with SyncTestClient(outer) as client:
        found = client.get("/shop/openapi.json").json()
    assert found["servers"] == [{"url": "/shop"}]
    validate(found)


def test_a_route_added_later_is_in_the_next_document() -> None:
    app = new_app()
    with SyncTestClient(app) as client:
        assert "/late" not in client.get("/openapi.json").json()["paths"]

        @app.get("/late")
        async def late() -> dict[str, str]:
            return {}

        assert "/late" in client.get("/openapi.json").json()["paths"]


def test_the_chat_example_document_is_valid(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from examples.chat import create_app

    monkeypatch.setenv("CHAT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    app = create_app()
    app.add_document_routes()
    found = openapi_document(app.router.routes(), title="chat", version="1", exclude=app.api_docs.excluded)
    validate(found)
    post = found["paths"]["/api/rooms/{room}/messages"]["post"]
    # the chat answers bad input itself (400), not with the 422 shape
    assert "422" not in post["responses"]
    assert "4XX" in post["responses"]


# round trip: requests built from the document --------------------------------------------


def _resolvable(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the document's components beside it, so its `$ref`s resolve."""
    return {**schema, "components": document["components"]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_query_values_drawn_from_the_document_are_accepted(
    document: dict[str, Any], data: st.DataObject
) -> None:
    params = _parameters(document, "/search", "get")
    query: dict[str, Any] = {}
    for name in ("q", "limit", "order"):
        schema = {k: v for k, v in params[name]["schema"].items() if k != "default"}
        value = data.draw(from_schema(schema), label=name)
        query[name] = value
    with SyncTestClient(new_app(), lifespan=False) as client:
        answer = client.get("/search", params=query)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"q": query["q"], "limit": query["limit"]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bodies_drawn_from_the_document_are_accepted(document: dict[str, Any], data: st.DataObject) -> None:
    operation = document["paths"]["/items/{id}"]["post"]
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    body = data.draw(from_schema(body_schema, document), label="body")
    item_id = data.draw(from_schema(_parameters(document, "/items/{id}", "post")["id"]["schema"]), label="id")
    with SyncTestClient(new_app(), lifespan=False) as client:
        answer = client.post(f"/items/{item_id}", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == body["name"]


@pytest.mark.parametrize(
    ("path", "params", "body", "loc"),
    [
        ("/search", {"limit": "5"}, None, ["query", "q"]),  # required and missing
        ("/search", {"q": "x", "limit": "501"}, None, ["query", "limit"]),  # over the maximum
        ("/search", {"q": "x" * 31}, None, ["query", "q"]),  # over maxLength
        ("/search", {"q": "x", "order": "up"}, None, ["query", "order"]),  # not in the enum
        ("/items/1", {}, {"name": "a"}, ["body"]),  # a required property missing
        ("/items/1", {}, {"name": "a", "price": 1001}, ["body", "price"]),  # over the maximum
        ("/items/1", {}, {"name": "", "price": 1}, ["body", "name"]),  # under minLength
    ],
)
def test_values_outside_the_document_get_422_where_it_says(
    document: dict[str, Any], path: str, params: dict[str, str], body: Any, loc: list[str]
) -> None:
    operation = (
        document["paths"]["/search"]["get"] if path == "/search" else document["paths"]["/items/{id}"]["post"]
    )
    if body is not None:  # the document itself says this body is invalid
        schema = _resolvable(operation["requestBody"]["content"]["application/json"]["schema"], document)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)
    with SyncTestClient(new_app(), lifespan=False) as client:
        answer = client.get(path, params=params) if body is None else client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][: len(loc)] == loc
