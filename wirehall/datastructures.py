"""Read-only views over what the ASGI scope carries: headers, query strings, URLs, state."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode

__all__ = ["URL", "Address", "Headers", "MultiDict", "QueryParams", "State", "parse_cookies"]


class Address(NamedTuple):
    """A peer's host and port."""

    host: str
    port: int


class MultiDict(Mapping[str, str]):
    """An immutable mapping in which a key may carry several values.

    `d[key]` and `d.get(key)` give the last value, `d.getlist(key)` all of them.
    """

    __slots__ = ("_dict", "_items")

    def __init__(self, items: Sequence[tuple[str, str]] = ()) -> None:
        self._items = list(items)
        self._dict = dict(self._items)

    def getlist(self, key: str) -> list[str]:
        """All values of `key`, in order (empty when missing)."""
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (key, value) pair, repeated keys included."""
        return list(self._items)

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MultiDict):
            return sorted(self._items) == sorted(other._items)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping: not hashable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class QueryParams(MultiDict):
    """The query string's parameters (repeated keys kept)."""

    __slots__ = ()

    @classmethod
    def from_string(cls, query: str | bytes, *, strict: bool = False) -> QueryParams:
        """Parse `a=1&a=2&b=` (bad percent-escapes are kept as they are).

        Bytes that are not UTF-8 once percent-decoded (`user=%FF`) become U+FFFD, so such
        a value cannot be told from a real U+FFFD. With `strict=True` they raise
        `UnicodeDecodeError` instead (and raw bytes are read as UTF-8), for a caller that
        must refuse text that was not UTF-8.
        """
        if strict:
            if isinstance(query, bytes):
                query = query.decode("utf-8")
            return cls(parse_qsl(query, keep_blank_values=True, errors="strict"))
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        return cls(parse_qsl(query, keep_blank_values=True))

    def __str__(self) -> str:
        return urlencode(self._items)


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only HTTP headers; `getlist` gives repeated ones."""

    __slots__ = ("_lookup", "raw")

    def __init__(self, raw: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.raw = list(raw)
        self._lookup: dict[str, str] | None = None

    @classmethod
    def from_mapping(cls, headers: Mapping[str, str]) -> Headers:
        """Build from a plain mapping (keys are lower-cased)."""
        return cls([(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()])

    def _index(self) -> dict[str, str]:
        if self._lookup is None:
            lookup: dict[str, str] = {}
            for key, value in self.raw:
                name = key.decode("latin-1").lower()
                text = value.decode("latin-1")
                # repeated headers fold into one comma-separated value (RFC 9110 5.3)
                lookup[name] = f"{lookup[name]}, {text}" if name in lookup else text
            self._lookup = lookup
        return self._lookup

    def getlist(self, key: str) -> list[str]:
        """Every value of header `key`, in order."""
        wanted = key.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.raw if k.lower() == wanted]

    def __getitem__(self, key: str) -> str:
        return self._index()[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index()

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def __repr__(self) -> str:
        return f"Headers({self._index()!r})"


class URL:
    """The request URL, built from the scope."""

    __slots__ = ("fragment", "host", "path", "port", "query", "scheme")

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        path: str,
        query: str = "",
        fragment: str = "",
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
        self.query = query
        self.fragment = fragment

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> URL:
        """The URL the client asked for, from the `Host` header or the server address."""
        scheme = scope.get("scheme", "http")
        host, port = "", None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
                break
        if host:
            if host.startswith("["):  # IPv6 literal
                end = host.find("]")
                rest = host[end + 1 :]
                if rest.startswith(":") and rest[1:].isdigit():
                    port = int(rest[1:])
                host = host[: end + 1]
            elif ":" in host:
                name, _, port_text = host.rpartition(":")
                if port_text.isdigit():
                    host, port = name, int(port_text)
        else:
            server = scope.get("server")
            if server:
                host, port = server[0], server[1]
        path = scope.get("root_path", "") + scope.get("path", "/")
        query = scope.get("query_string", b"").decode("latin-1")
        return cls(scheme, host, port, path, query)

    @property
    def netloc(self) -> str:
        """`host[:port]`, the port left out when it is the scheme's default."""
        default = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(self.scheme)
        if self.port is None or self.port == default:
            return self.host
        return f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        """`scheme://netloc` with the HTTP scheme (ws becomes http, wss https)."""
        scheme = {"ws": "http", "wss": "https"}.get(self.scheme, self.scheme)
        return f"{scheme}://{self.netloc}"

    def replace(self, **changes: Any) -> URL:
        """A copy with some parts changed."""
        parts = {name: getattr(self, name) for name in self.__slots__}
        parts.update(changes)
        return URL(**parts)

    def __str__(self) -> str:
        text = f"{self.scheme}://{self.netloc}{quote(self.path, safe='/:@!$&()*+,;=-._~%')}"
        if self.query:
            text += f"?{self.query}"
        if self.fragment:
            text += f"#{self.fragment}"
        return text

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class State:
    """Free-form attributes for one request, connection or app: `state.user = ...`."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"state has no attribute {name!r}; set it first")

    def __contains__(self, name: str) -> bool:
        return name in self.__dict__


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a `Cookie` header leniently: a malformed pair is skipped, never an error."""
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies
