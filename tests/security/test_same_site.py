"""`@json_only` and `@same_site`: cross-site and non-JSON unsafe requests are refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall import HTTPController, Wirehall, json_only, same_site
from wirehall.errors import ConfigurationError
from wirehall.security.same_site import SameSiteGuard, is_json_content_type
from wirehall.testing.client import TestClient

OWN = "http://testserver"
JSON = {"content-type": "application/json"}


def build_app(**options: Any) -> tuple[Wirehall, list[Any]]:
    app = Wirehall(**options)
    received: list[Any] = []

    @app.post("/fn")
    @same_site
    @json_only
    async def fn_endpoint() -> dict[str, bool]:
        return {"ok": True}

    @app.route("/items", methods=["POST", "DELETE", "GET"])
    class Items(HTTPController):
        @same_site
        @json_only
        async def post(self) -> tuple[dict[str, bool], int]:
            received.append(await self.request.json())
            return {"ok": True}, 201

        @same_site
        @json_only
        async def delete(self) -> dict[str, bool]:
            received.append("deleted")
            return {"ok": True}

        @same_site
        @json_only
        async def get(self) -> dict[str, bool]:
            return {"ok": True}

    @app.route("/whole")
    @json_only
    @same_site
    class Whole(HTTPController):
        async def put(self) -> dict[str, bool]:
            return {"ok": True}

        async def patch(self) -> dict[str, bool]:
            return {"ok": True}

    @json_only  # marked after registration: checked per request, so this still counts
    @app.post("/late")
    async def late() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/plain")
    async def plain() -> dict[str, bool]:
        return {"ok": True}

    return app, received


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "json",
    ],
)
async def test_non_json_body_gets_415_and_the_endpoint_does_not_run(content_type: str | None) -> None:
    app, received = build_app()
    headers = {} if content_type is None else {"content-type": content_type}
    async with TestClient(app) as client:
        response = await client.post("/items", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert received == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ],
)
async def test_json_content_types_are_accepted(content_type: str) -> None:
    app, received = build_app()
    async with TestClient(app) as client:
        response = await client.post("/items", content=b'{"a": 1}', headers={"content-type": content_type})
    assert response.status_code == 201
    assert received == [{"a": 1}]


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "https://testserver", "http://testserver:8080", "garbage"]
)
async def test_foreign_origin_gets_403_even_with_json(origin: str) -> None:
    app, received = build_app()
    async with TestClient(app) as client:
        response = await client.post("/items", json={"a": 1}, headers={"origin": origin})
    assert response.status_code == 403
    assert "cross-site" in response.json()["error"]
    assert received == []


async def test_cross_site_text_plain_post_is_refused_before_anything_runs() -> None:
    app, received = build_app()
    async with TestClient(app) as client:
        response = await client.post(
            "/items",
            content=b'{"a": 1}',
            headers={"origin": "http://evil.example", "content-type": "text/plain"},
        )
    assert response.status_code == 403
    assert received == []


@pytest.mark.parametrize("origin", [OWN, "http://TestServer:80", None])
async def test_own_origin_or_no_origin_is_allowed(origin: str | None) -> None:
    app, received = build_app()
    headers = {} if origin is None else {"origin": origin}
    async with TestClient(app) as client:
        response = await client.post("/items", json={"a": 1}, headers=headers)
    assert response.status_code == 201
    assert received == [{"a": 1}]


async def test_allowed_origins_of_the_app_pass_as_for_websockets() -> None:
    app, _ = build_app(allowed_origins=["https://app.example.com", "https://*.example.net"])
    async with TestClient(app) as client:
        listed = await client.post("/items", json={}, headers={"origin": "https://app.example.com"})
        sub = await client.post("/items", json={}, headers={"origin": "https://a.example.net"})
        other = await client.post("/items", json={}, headers={"origin": "https://example.org"})
    assert (listed.status_code, sub.status_code, other.status_code) == (201, 201, 403)


async def test_star_in_allowed_origins_turns_the_origin_check_off() -> None:
    app, _ = build_app(allowed_origins=["*"])
    async with TestClient(app) as client:
        response = await client.post("/items", json={}, headers={"origin": "http://evil.example"})
        still_json = await client.post("/items", content=b"{}", headers={"content-type": "text/plain"})
    assert response.status_code == 201
    assert still_json.status_code == 415


async def test_safe_methods_are_not_checked() -> None:
    app, _ = build_app()
    async with TestClient(app) as client:
        response = await client.get("/items", headers={"origin": "http://evil.example"})
    assert response.status_code == 200


async def test_delete_without_body_needs_no_content_type_but_a_same_origin() -> None:
    app, received = build_app()
    async with TestClient(app) as client:
        plain = await client.delete("/items")
        foreign = await client.delete("/items", headers={"origin": "http://evil.example"})
        with_body = await client.request(
            "DELETE", "/items", content=b"x", headers={"content-type": "text/plain"}
        )
    assert (plain.status_code, foreign.status_code, with_body.status_code) == (200, 403, 415)
    assert received == ["deleted"]


async def test_class_marks_cover_every_method_and_functions_work_too() -> None:
    app, _ = build_app()
    async with TestClient(app) as client:
        put = await client.put("/whole", content=b"{}", headers={"content-type": "text/plain"})
        patch = await client.patch("/whole", json={}, headers={"origin": "http://evil.example"})
        fn = await client.post("/fn", content=b"{}", headers={"content-type": "text/plain"})
        fn_ok = await client.post("/fn", json={}, headers={"origin": OWN})
        late = await client.post("/late", content=b"{}")
        unmarked = await client.post("/plain", content=b"x", headers={"origin": "http://evil.example"})
    assert (put.status_code, patch.status_code, fn.status_code, fn_ok.status_code) == (415, 403, 415, 200)
    assert late.status_code == 415
    assert unmarked.status_code == 200


def test_marking_something_that_takes_no_attributes_says_how_to_use_it() -> None:
    with pytest.raises(ConfigurationError, match="use it on a function"):
        json_only(3)
    with pytest.raises(ConfigurationError, match="same_site"):
        same_site("x")


def test_guard_without_marks_or_on_safe_methods_lets_everything_through() -> None:
    guard = SameSiteGuard(lambda origin, scope: False)

    def unmarked() -> None: ...

    @same_site
    def marked() -> None: ...

    post = {"method": "POST", "headers": [(b"origin", b"http://evil.example")]}
    assert guard((unmarked,), post) is None
    assert guard((marked,), {**post, "method": "GET"}) is None
    refusal = guard((marked,), post)
    assert refusal is not None
    assert refusal.status == 403


@settings(max_examples=200, deadline=None)
@given(params=st.binary(max_size=40))
def test_content_type_parameters_do_not_change_the_media_type(params: bytes) -> None:
    assert is_json_content_type(b"application/json;" + params)
    assert is_json_content_type(b" Application/Problem+JSON ;" + params)
    assert not is_json_content_type(b"text/plain;" + params)
    assert not is_json_content_type(b"application/x-www-form-urlencoded;" + params)
    assert not is_json_content_type(None)
