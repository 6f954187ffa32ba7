"""What an HTTP request and a WebSocket connection have in common, read from the scope."""

from __future__ import annotations

from typing import Any, Protocol

from wirehall.datastructures import URL, Address, Headers, QueryParams, State, parse_cookies
from wirehall.di import Container
from wirehall.types import Scope

__all__ = ["Connection", "ServingApp"]


class ServingApp(Protocol):
    """What a request or a connection may ask of the app serving it (a `Wirehall` is one).

    A Protocol rather than `Wirehall` itself: the app imports the layers that build on
    `Connection`, so naming it here would tie them in a cycle.
    """

    @property
    def container(self) -> Container:
        """The app's dependency container."""
        ...

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called `name`."""
        ...


class Connection:
    """Path parameters, query, headers, cookies, session and user of one request or socket.

    `Request`, `HTTPController` and `WebSocketHandler` all offer these under the same names.
    """

    __slots__ = ("_cookies", "_headers", "_query", "_url", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._headers: Headers | None = None
        self._query: QueryParams | None = None
        self._cookies: dict[str, str] | None = None
        self._url: URL | None = None

    @property
    def app(self) -> ServingApp:
        """The application serving this connection (the `Wirehall` instance)."""
        return self.scope["app"]  # type: ignore[no-any-return]

    @property
    def path_params(self) -> dict[str, Any]:
        """Parameters matched in the path, already converted (`{id:int}` gives an int)."""
        return self.scope.get("path_params", {})  # type: ignore[no-any-return]

    @property
    def query(self) -> QueryParams:
        """The query string's parameters; `getlist` gives repeated ones."""
        if self._query is None:
            self._query = QueryParams.from_string(self.scope.get("query_string", b""))
        return self._query

    @property
    def headers(self) -> Headers:
        """Case-insensitive request (or handshake) headers."""
        if self._headers is None:
            self._headers = Headers(self.scope.get("headers", ()))
        return self._headers

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent by the client (malformed pairs are skipped)."""
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers.get("cookie", ""))
        return self._cookies

    @property
    def url(self) -> URL:
        """The full URL the client asked for."""
        if self._url is None:
            self._url = URL.from_scope(self.scope)
        return self._url

    @property
    def client(self) -> Address | None:
        """The peer's address, when the server knows it."""
        client = self.scope.get("client")
        return Address(client[0], client[1]) if client else None

    @property
    def state(self) -> State:
        """Attributes for this request or connection alone."""
        state = self.scope.get("wirehall.state")
        if state is None:
            state = self.scope["wirehall.state"] = State()
        return state

    @property
    def session(self) -> dict[str, Any]:
        """The signed-cookie session (needs `SessionMiddleware`; otherwise a fresh dict)."""
        session = self.scope.get("session")
        if session is None:
            session = self.scope["session"] = {}
        return session

    @property
    def user(self) -> Any:
        """Who is making the request, as the authentication hook said; None when anonymous."""
        return self.scope.get("user")
