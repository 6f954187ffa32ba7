from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirehall.connection import Connection
from wirehall.errors import ConfigurationError
from wirehall.security.auth import (
    AuthenticationMiddleware,
    AuthRequirement,
    access_denied,
    bearer_token,
    requires_auth,
    session_user,
    user_roles,
)

from ._asgi import client, echo_scope_app, handshake, passed_through, websocket_scope


class User:
    def __init__(self, name: str, roles: Any = ()) -> None:
        self.name = name
        self.roles = roles


async def endpoint() -> None:
    return None


def test_unmarked_endpoint_is_allowed_for_anyone() -> None:
    assert access_denied(endpoint, {"type": "http"}) is None
    assert access_denied(endpoint, {"type": "http", "user": None}) is None


def test_requires_auth_without_user_is_401() -> None:
    marked = requires_auth()(endpoint)
    assert marked is endpoint
    assert marked.__wirehall_auth__ == AuthRequirement(frozenset())  # type: ignore[attr-defined]
    assert access_denied(marked, {"type": "http"}) == 401
    assert access_denied(marked, {"type": "http", "user": None}) == 401
    assert access_denied(marked, {"type": "http", "user": User("ann")}) is None


def test_bare_decorator_works() -> None:
    @requires_auth
    async def handler() -> None:
        return None

    assert access_denied(handler, {"type": "websocket"}) == 401


def test_missing_role_is_403_and_all_roles_are_required() -> None:
    @requires_auth(["admin", "staff"])
    async def handler() -> None:
        return None

    assert access_denied(handler, {"user": User("ann", ["admin"])}) == 403
    assert access_denied(handler, {"user": User("ann", ["staff", "admin", "x"])}) is None
    assert access_denied(handler, {"user": {"name": "bob", "roles": ["admin", "staff"]}}) is None
    assert access_denied(handler, {"user": {"name": "bob"}}) == 403
    assert access_denied(handler, {"user": "plain string user"}) == 403


def test_single_role_string_is_one_role() -> None:
    @requires_auth("admin")
    async def handler() -> None:
        return None

    assert access_denied(handler, {"user": User("a", "admin")}) is None
    assert access_denied(handler, {"user": User("a", ["a", "d", "m", "i", "n"])}) == 403


def test_user_with_is_authenticated_false_is_anonymous() -> None:
    class Anonymous:
        is_authenticated = False

    assert access_denied(requires_auth()(endpoint), {"user": Anonymous()}) == 401


def test_controller_class_and_methods() -> None:
    @requires_auth(["admin"])
    class Admin:
        async def get(self) -> None:
            return None

    class Sub(Admin):
        pass

    class Mixed:
        async def get(self) -> None:
            return None

        @requires_auth()
        async def post(self) -> None:
            return None

    ann = {"user": User("ann")}
    assert access_denied(Admin, ann) == 403
    assert access_denied(Sub, ann) == 403
    assert access_denied(Mixed, ann) is None
    assert access_denied(Mixed().get, {}) is None
    assert access_denied(Mixed().post, {}) == 401  # bound methods read the function's mark
    assert access_denied(Mixed.post, ann) is None


def test_requires_auth_rejects_non_string_roles() -> None:
    with pytest.raises(ConfigurationError, match="strings"):
        requires_auth([1])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("user", "roles"),
    [
        (User("a", None), frozenset()),
        (User("a", 5), frozenset()),
        (User("a", ["x", 3]), frozenset({"x"})),
        ({"roles": ("a", "b")}, frozenset({"a", "b"})),
        (object(), frozenset()),
    ],
)
def test_user_roles_is_lenient(user: Any, roles: frozenset[str]) -> None:
    assert user_roles(user) == roles


async def _token_user(token: str) -> Any:
    return {"name": "ann", "roles": ["admin"]} if token == "good" else None


async def test_middleware_sets_user_from_bearer_token() -> None:
    app = AuthenticationMiddleware(echo_scope_app, bearer_token(_token_user))
    async with client(app) as http:
        anonymous = await http.get("/")
        assert anonymous.json()["user"] is None
        signed = await http.get("/", headers={"Authorization": "Bearer good"})
        assert signed.json()["user"] == {"name": "ann", "roles": ["admin"]}
        lower = await http.get("/", headers={"authorization": "bearer   good "})
        assert lower.json()["user"]["name"] == "ann"
        bad = await http.get("/", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 200
        assert bad.json()["user"] is None
        basic = await http.get("/", headers={"Authorization": "Basic good"})
        assert basic.json()["user"] is None
        # the query parameter is for WebSockets only
        query = await http.get("/?token=good")
        assert query.json()["user"] is None


async def test_websocket_reads_token_from_header_or_query() -> None:
    app = AuthenticationMiddleware(echo_scope_app, bearer_token(_token_user))
    by_query = await handshake(app, websocket_scope(query_string=b"token=good"))
    assert by_query.accepted
    assert by_query.texts()[0]["user"]["name"] == "ann"
    by_header = await handshake(app, websocket_scope(headers=[("authorization", "Bearer good")]))
    assert by_header.texts()[0]["user"]["name"] == "ann"
    bad = await handshake(app, websocket_scope(query_string=b"token=bad"))
    assert bad.accepted
    assert bad.texts()[0]["user"] is None


async def test_verify_is_not_called_without_token() -> None:
    calls: list[str] = []

    async def verify(token: str) -> Any:
        calls.append(token)
        return None

    app = AuthenticationMiddleware(echo_scope_app, bearer_token(verify))
    async with client(app) as http:
        await http.get("/", headers={"Authorization": "Bearer "})
        await http.get("/")
    assert calls == []


async def test_crashing_authenticator_is_500_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def authenticate(connection: Connection) -> Any:
        raise RuntimeError("database password is hunter2")

    app = AuthenticationMiddleware(echo_scope_app, authenticate)
    with caplog.at_level(logging.ERROR, logger="wirehall.security.auth"):
        async with client(app) as http:
            response = await http.get("/")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}
    assert "hunter2" not in response.text
    assert "authentication callback failed" in caplog.text


async def test_crashing_authenticator_refuses_websocket() -> None:
    async def authenticate(connection: Connection) -> Any:
        raise RuntimeError("boom")

    app = AuthenticationMiddleware(echo_scope_app, authenticate)
    result = await handshake(app, websocket_scope())
    assert not result.accepted
    assert result.close_code == 1011
    denial = await handshake(app, websocket_scope(extensions={"websocket.http.response": {}}))
    assert denial.http_status == 500
    assert b"boom" not in denial.http_body


async def test_session_user_reads_the_session() -> None:
    async def with_session(scope: Any, receive: Any, send: Any) -> None:
        scope["session"] = {"user": {"name": "ann"}}
        await AuthenticationMiddleware(echo_scope_app, session_user())(scope, receive, send)

    async with client(with_session) as http:
        assert (await http.get("/")).json()["user"] == {"name": "ann"}


async def test_session_user_without_session_middleware_is_a_clear_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = AuthenticationMiddleware(echo_scope_app, session_user())
    with caplog.at_level(logging.ERROR, logger="wirehall.security.auth"):
        async with client(app) as http:
            assert (await http.get("/")).status_code == 500
    assert "SessionMiddleware" in caplog.text


async def test_sync_authenticator_is_accepted() -> None:
    def authenticate(connection: Connection) -> Any:
        return connection.headers.get("x-user")

    app = AuthenticationMiddleware(echo_scope_app, authenticate)
    async with client(app) as http:
        assert (await http.get("/", headers={"x-user": "bo"})).json()["user"] == "bo"


async def test_lifespan_passes_through() -> None:
    async def authenticate(connection: Connection) -> Any:
        raise AssertionError("not called for lifespan")

    seen = await passed_through(lambda app: AuthenticationMiddleware(app, authenticate), {"type": "lifespan"})
    assert seen == ["lifespan"]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    authorization=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
    token=st.binary(max_size=40),
)
async def test_generated_credentials_never_crash(authorization: str, token: bytes) -> None:
    app = AuthenticationMiddleware(echo_scope_app, bearer_token(_token_user))
    async with client(app) as http:
        response = await http.get("/", headers={b"authorization": authorization.strip().encode("latin-1")})
    assert response.status_code == 200
    query = b"token=" + token.replace(b"&", b"").replace(b"#", b"")
    result = await handshake(app, websocket_scope(query_string=query))
    assert result.accepted
