"""Endpoint parameters from the request: values by name and type, bodies, and bad input.

Each kind of value is bound through a real app (`TestClient`), so the binder, the plan and
the app's 422 answer are checked together; hypothesis sends generated query strings and
bodies, none of which may give a 500.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypedDict
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirehall import (
    Body,
    ConfigurationError,
    Cookie,
    Form,
    Header,
    HTTPController,
    Query,
    RequestValidationError,
    Wirehall,
)
from wirehall._decoding import location
from wirehall.params import MISSING, ParamInfo, compile_binder, is_body_type, is_value_type
from wirehall.testing import TestClient


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(msgspec.Struct):
    name: str
    price: Annotated[float, msgspec.Meta(ge=0)]
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Pair(TypedDict):
    left: str
    right: int


class Login(msgspec.Struct):
    user: str
    remember: bool = False
    roles: list[str] = []


Limit = Annotated[int, msgspec.Meta(ge=1, le=500)]


def make_app() -> Wirehall:
    app = Wirehall(backplane="memory://")

    @app.get("/search")
    async def search(q: str = "none", limit: int = 10) -> dict[str, Any]:
        return {"q": q, "limit": limit}

    @app.get("/kinds")
    async def kinds(
        f: float,
        b: bool,
        color: Color,
        mode: Literal["fast", "slow"],
        key: uuid.UUID,
        day: datetime.date,
        at: datetime.datetime | None = None,
        ids: list[int] | None = None,
    ) -> dict[str, Any]:
        return {
            "f": f,
            "b": b,
            "color": color.value,
            "mode": mode,
            "key": str(key),
            "day": day.isoformat(),
            "at": at.isoformat() if at else None,
            "ids": ids,
        }

    @app.get("/limited")
    async def limited(limit: Limit = 50, since: Annotated[int, msgspec.Meta(ge=0)] | None = None) -> Any:
        return {"limit": limit, "since": since}

    @app.get("/marked")
    async def marked(
        request_id: Annotated[str, Header("x-request-id")],
        user_agent: Annotated[str | None, Header()] = None,
        session: Annotated[str | None, Cookie("sid")] = None,
        size: Annotated[int, Query(alias="page-size")] = 20,
        accept: Annotated[list[str], Header()] = [],  # noqa: B006 - never mutated
    ) -> dict[str, Any]:
        return {"id": request_id, "agent": user_agent, "sid": session, "size": size, "accept": accept}

    @app.get("/items/{item_id}")
    async def typed_path(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.post("/items", status_code=201)
    async def create(item: Item, verbose: bool = False) -> Item:
        return item if verbose else Item(item.name, item.price)

    @app.post("/points")
    async def points(points: list[Point]) -> dict[str, int]:
        return {"sum": sum(p.x + p.y for p in points)}

    @app.post("/pair")
    async def pair(value: Pair) -> Pair:
        return value

    @app.post("/maybe")
    async def maybe(item: Item | None = None) -> dict[str, Any]:
        return {"item": None if item is None else item.name}

    @app.post("/login")
    async def login(form: Annotated[Login, Form()]) -> Login:
        return form

    return app


@pytest.fixture
async def client() -> Any:
    async with TestClient(make_app()) as client:
        yield client


# --- values by name -----------------------------------------------------------------------


async def test_query_values_bind_by_name_instead_of_their_defaults(client: TestClient) -> None:
    assert (await client.get("/search?q=cats&limit=5")).json() == {"q": "cats", "limit": 5}
    assert (await client.get("/search")).json() == {"q": "none", "limit": 10}


async def test_each_kind_of_value_is_converted(client: TestClient) -> None:
    key = uuid.uuid4()
    response = await client.get(
        f"/kinds?f=1.5&b=true&color=blue&mode=slow&key={key}&day=2026-01-02"
        "&at=2026-01-02T03:04:05%2B00:00&ids=1&ids=2&ids=3"
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "f": 1.5,
        "b": True,
        "color": "blue",
        "mode": "slow",
        "key": str(key),
        "day": "2026-01-02",
        "at": "2026-01-02T03:04:05+00:00",
        "ids": [1, 2, 3],
    }


async def test_optional_values_are_none_when_absent_and_null_is_not_none(client: TestClient) -> None:
    base = f"/kinds?f=0&b=0&color=red&mode=fast&key={uuid.uuid4()}&day=2026-01-02"
    assert (await client.get(base)).json()["ids"] is None
    assert (await client.get("/limited?since=null")).status_code == 422


async def test_constraints_come_from_msgspec_meta(client: TestClient) -> None:
    assert (await client.get("/limited?limit=500&since=0")).json() == {"limit": 500, "since": 0}
    response = await client.get("/limited?limit=501")
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == [{"loc": ["query", "limit"], "msg": "Expected `int` <= 500, got '501'"}]
    assert "limit" in body["error"]
    assert "500" in body["error"]


async def test_every_bad_value_is_listed(client: TestClient) -> None:
    response = await client.get(
        "/kinds?f=x&b=maybe&color=green&mode=fast&key=nope&day=2026-13-01&ids=1&ids=x"
    )
    assert response.status_code == 422
    locs = [tuple(error["loc"]) for error in response.json()["detail"]]
    assert locs == [
        ("query", "f"),
        ("query", "b"),
        ("query", "color"),
        ("query", "key"),
        ("query", "day"),
        ("query", "ids", 1),
    ]


async def test_a_missing_required_value_is_named(client: TestClient) -> None:
    response = await client.get("/marked")
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["header", "x-request-id"], "msg": "field required"}]
    assert response.json()["error"] == "invalid header 'x-request-id': field required"


async def test_headers_cookies_and_aliases(client: TestClient) -> None:
    response = await client.get(
        "/marked?page-size=7&size=99",
        headers=[
            ("x-request-id", "abc"),
            ("user-agent", "t/1"),
            ("cookie", "sid=s1"),
            ("accept", "a"),
            ("accept", "b"),
        ],
    )
    assert response.json() == {"id": "abc", "agent": "t/1", "sid": "s1", "size": 7, "accept": ["a", "b"]}
    bad = await client.get("/marked?page-size=big", headers={"x-request-id": "abc"})
    assert bad.json()["detail"][0]["loc"] == ["query", "page-size"]


async def test_a_typed_path_parameter_is_converted_or_422(client: TestClient) -> None:
    assert (await client.get("/items/42")).json() == {"item_id": 42}
    response = await client.get("/items/abc")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "item_id"]


# --- bodies -------------------------------------------------------------------------------


async def test_a_struct_body_is_decoded_and_status_code_applies(client: TestClient) -> None:
    response = await client.post("/items?verbose=true", json={"name": "pen", "price": 1.5, "tags": ["a"]})
    assert response.status_code == 201
    assert response.json() == {"name": "pen", "price": 1.5, "tags": ["a"]}


async def test_dataclass_list_and_typeddict_bodies(client: TestClient) -> None:
    assert (await client.post("/points", json=[{"x": 1, "y": 2}, {"x": 3, "y": 4}])).json() == {"sum": 10}
    assert (await client.post("/pair", json={"left": "a", "right": 2})).json() == {"left": "a", "right": 2}
    bad = await client.post("/points", json=[{"x": 1, "y": 2}, {"x": "three", "y": 4}])
    assert bad.json()["detail"] == [{"loc": ["body", 1, "x"], "msg": "Expected `int`, got `str`"}]


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (
            b'{"name": "pen", "price": "cheap"}',
            422,
            [{"loc": ["body", "price"], "msg": "Expected `float`, got `str`"}],
        ),
        (
            b'{"name": "pen", "price": -1}',
            422,
            [{"loc": ["body", "price"], "msg": "Expected `float` >= 0.0"}],
        ),
        (b'{"price": 1}', 422, [{"loc": ["body", "name"], "msg": "field required"}]),
        (b"[1]", 422, [{"loc": ["body"], "msg": "Expected `object`, got `array`"}]),
        (b'{"name": "pen", ', 400, None),
        (b"\xff\xfe", 400, None),
        (b"", 400, None),
        (b"   ", 400, None),
    ],
)
async def test_bad_bodies_are_400_when_not_json_and_422_when_the_wrong_shape(
    client: TestClient, content: bytes, status: int, detail: list[dict[str, Any]] | None
) -> None:
    response = await client.post("/items", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    body = response.json()
    assert isinstance(body["error"], str)
    assert body.get("detail") == detail


async def test_an_optional_body_may_be_left_out(client: TestClient) -> None:
    assert (await client.post("/maybe")).json() == {"item": None}
    assert (await client.post("/maybe", json={"name": "a", "price": 1})).json() == {"item": "a"}


async def test_a_form_body_is_converted_into_its_type(client: TestClient) -> None:
    response = await client.post("/login", data={"user": "ann", "remember": "true", "roles": ["a", "b"]})
    assert response.json() == {"user": "ann", "remember": True, "roles": ["a", "b"]}
    bad = await client.post("/login", data={"remember": "true"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "user"]


async def test_the_body_size_limit_still_applies() -> None:
    app = Wirehall(backplane="memory://", max_body_size=64)

    @app.post("/items")
    async def create(item: Item) -> Item:
        return item

    async with TestClient(app) as client:
        response = await client.post("/items", json={"name": "x" * 100, "price": 1})
    assert response.status_code == 413


# --- registration -------------------------------------------------------------------------


def test_a_parameter_with_no_source_is_refused_at_registration() -> None:
    app = Wirehall(backplane="memory://")

    async def endpoint(thing: dict[str, Any] | int) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"'thing' of .*endpoint cannot be resolved"):
        app.get("/x")(endpoint)


def test_two_bodies_are_refused_at_registration() -> None:
    app = Wirehall(backplane="memory://")

    async def endpoint(a: Item, b: Point) -> None:
        pass

    with pytest.raises(ConfigurationError, match="2 bodies"):
        app.post("/x")(endpoint)


def test_a_form_of_a_plain_value_is_refused_at_registration() -> None:
    app = Wirehall(backplane="memory://")

    async def endpoint(a: Annotated[int, Form()]) -> None:
        pass

    with pytest.raises(ConfigurationError, match="Form"):
        app.post("/x")(endpoint)


async def test_a_body_type_registered_in_the_container_afterwards_is_reported_at_startup() -> None:
    app = Wirehall(backplane="memory://")

    @app.post("/x")
    async def endpoint(point: Point) -> None:
        pass

    app.container.singleton(Point, lambda: Point(1, 2))
    with pytest.raises(ConfigurationError, match=r"Body\(\)"):
        await app.startup()


async def test_an_explicit_body_marker_wins_over_the_container() -> None:
    app = Wirehall(backplane="memory://")
    app.container.singleton(Point, lambda: Point(1, 2))

    @app.post("/x")
    async def endpoint(point: Annotated[Point, Body()]) -> dict[str, int]:
        return {"x": point.x}

    async with TestClient(app) as client:
        assert (await client.post("/x", json={"x": 5, "y": 0})).json() == {"x": 5}


def test_the_route_keeps_what_its_endpoint_takes_and_answers() -> None:
    app = make_app()
    routes = {(route.method, route.path): route for route in app.router.routes()}
    spec = routes[("POST", "/items")].spec
    assert spec is not None
    assert spec.status_code == 201
    assert spec.response_type is Item
    assert [(p.name, p.source, p.required) for p in spec.params] == [
        ("item", "body", True),
        ("verbose", "query", False),
    ]
    assert spec.body is not None
    assert spec.body.media_type == "application/json"
    limited = routes[("GET", "/limited")].spec
    assert limited is not None
    first = limited.params[0]
    assert (first.name, first.alias, first.default, dict(first.constraints)) == (
        "limit",
        "limit",
        50,
        {"ge": 1, "le": 500},
    )
    marked = routes[("GET", "/marked")].spec
    assert marked is not None
    assert [(p.source, p.alias) for p in marked.params] == [
        ("header", "x-request-id"),
        ("header", "user-agent"),
        ("cookie", "sid"),
        ("query", "page-size"),
        ("header", "accept"),
    ]
    assert marked.params[0].default is MISSING
    assert marked.params[4].many


# --- the controller hook ------------------------------------------------------------------


async def test_a_controller_may_answer_invalid_input_itself() -> None:
    app = Wirehall(backplane="memory://")

    @app.route("/c")
    class Strict(HTTPController):
        async def get(self, n: int) -> dict[str, int]:
            return {"n": n}

        async def on_invalid_input(self, error: RequestValidationError) -> Any:
            return {"refused": error.errors[0]["loc"]}, 400

    async with TestClient(app) as client:
        assert (await client.get("/c?n=3")).json() == {"n": 3}
        response = await client.get("/c?n=three")
    assert response.status_code == 400
    assert response.json() == {"refused": ["query", "n"]}


# --- plain logic --------------------------------------------------------------------------


def test_location_reads_msgspecs_path() -> None:
    assert location("Expected `int`, got `str` - at `$.items[2].price`") == (
        ("items", 2, "price"),
        "Expected `int`, got `str`",
    )
    assert location("Object missing required field `name` - at `$.items[0]`") == (
        ("items", 0, "name"),
        "field required",
    )
    assert location("Expected `object`, got `array`") == ((), "Expected `object`, got `array`")


def test_value_and_body_types() -> None:
    for value in (
        str,
        int,
        float | None,
        list[int],
        Color,
        Literal["a"],
        uuid.UUID,
        Annotated[int, msgspec.Meta(ge=0)],
    ):
        assert is_value_type(value), value
        assert not is_body_type(value), value
    for body in (Item, Point, Pair, list[Item], Item | None, dict[str, int]):
        assert is_body_type(body), body
        assert not is_value_type(body), body


# --- generated input: never a 500 ------------------------------------------------------------

_text = st.text(max_size=12)
FIXTURE = [HealthCheck.function_scoped_fixture]


@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURE)
@given(
    path=st.sampled_from(["/search", "/kinds", "/limited", "/marked", "/items/1", "/items/x"]),
    pairs=st.lists(
        st.tuples(
            st.sampled_from(
                ["q", "limit", "since", "f", "b", "color", "mode", "key", "day", "at", "ids", "page-size"]
            ),
            _text,
        ),
        max_size=6,
    ),
    header=_text.filter(lambda v: v.isascii() and v.isprintable()),
)
async def test_no_generated_query_gives_a_500(
    client: TestClient, path: str, pairs: list[tuple[str, str]], header: str
) -> None:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    response = await client.get(
        f"{path}?{query}", headers={"x-request-id": header, "cookie": f"sid={quote(header)}"}
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert isinstance(response.json()["error"], str)
        assert all(isinstance(error["loc"], list) for error in response.json()["detail"])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["name", "price", "tags", "x", "y"]), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURE)
@given(
    path=st.sampled_from(["/items", "/points", "/pair", "/maybe", "/login"]),
    body=st.one_of(st.binary(max_size=40), _json.map(lambda v: json.dumps(v).encode())),
    form=st.booleans(),
)
async def test_no_generated_body_gives_a_500(client: TestClient, path: str, body: bytes, form: bool) -> None:
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    response = await client.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code in (200, 201, 400, 415, 422), response.text
    assert isinstance(response.json(), dict)


class _QueryOnly:
    """A ValueSource with only a query string, for binding values without a request."""

    def __init__(self, query: bytes) -> None:
        self.scope: Mapping[str, Any] = {"query_string": query}
        self.path_params: dict[str, Any] = {}
        self.headers: Any = None
        self.cookies: dict[str, str] = {}


_BOUNDED = Annotated[int, msgspec.Meta(ge=1, le=500)]
_SPELLINGS = ["5", "0", "1", "500", "501", "007", "-5", "+5", "5.0", "1e3", "", " 5", "٣", "9" * 30, "true",
              "True", "TRUE", "false", "yes", "nan"]  # fmt: skip


@pytest.mark.parametrize("annotation", [int, bool, _BOUNDED, Annotated[int, msgspec.Meta(gt=0, lt=10)]])
@pytest.mark.parametrize("raw", _SPELLINGS)
def test_ints_and_bools_bind_as_msgspec_converts_them(annotation: Any, raw: str) -> None:
    bind = compile_binder([ParamInfo("v", "query", annotation, alias="v")])
    try:
        expected = msgspec.convert(raw, annotation, strict=False)
    except msgspec.ValidationError:
        with pytest.raises(RequestValidationError):
            bind(_QueryOnly(b"v=" + quote(raw).encode()))
    else:
        value = bind(_QueryOnly(b"v=" + quote(raw).encode()))["v"]
        assert value == expected
        assert type(value) is type(expected)
