from __future__ import annotations

import pytest

from wirehall.datastructures import URL, Address, Headers, MultiDict, QueryParams, State, parse_cookies


def test_multidict_keeps_repeated_keys_and_gives_the_last_by_default() -> None:
    d = MultiDict([("a", "1"), ("b", "2"), ("a", "3")])
    assert d["a"] == "3"
    assert d.get("a") == "3"
    assert d.getlist("a") == ["1", "3"]
    assert d.getlist("missing") == []
    assert d.multi_items() == [("a", "1"), ("b", "2"), ("a", "3")]
    assert list(d) == ["a", "b"]
    assert len(d) == 2
    with pytest.raises(KeyError):
        d["missing"]


def test_multidict_equality_ignores_order_but_not_repeats() -> None:
    assert MultiDict([("a", "1"), ("b", "2")]) == MultiDict([("b", "2"), ("a", "1")])
    assert MultiDict([("a", "1")]) != MultiDict([("a", "1"), ("a", "1")])
    assert MultiDict([("a", "1")]) == {"a": "1"}


def test_multidict_is_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(MultiDict())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1&a=2&b=", [("a", "1"), ("a", "2"), ("b", "")]),
        (b"q=hello+world&x=%C3%A9", [("q", "hello world"), ("x", "é")]),
        ("", []),
        ("flag", [("flag", "")]),
        ("bad=%zz", [("bad", "%zz")]),
        ("k=a%26b", [("k", "a&b")]),
    ],
)
def test_query_params_parse(query: str | bytes, expected: list[tuple[str, str]]) -> None:
    assert QueryParams.from_string(query).multi_items() == expected


@pytest.mark.parametrize("query", [b"user=%FF", "user=%C3", b"a=1&user=%ED%A0%80", b"user=\xff"])
def test_strict_query_params_refuse_what_is_not_utf8(query: str | bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        QueryParams.from_string(query, strict=True)


def test_lenient_query_params_replace_what_is_not_utf8() -> None:
    assert QueryParams.from_string(b"user=%FF")["user"] == "\ufffd"


def test_strict_query_params_read_utf8_like_the_lenient_ones() -> None:
    query = b"user=%C3%A9&q=a+b&bad=%zz&raw=\xc3\xa9"
    assert QueryParams.from_string(query, strict=True).multi_items() == [
        ("user", "é"),
        ("q", "a b"),
        ("bad", "%zz"),
        ("raw", "é"),
    ]


def test_query_params_str_round_trips() -> None:
    params = QueryParams([("a", "1"), ("a", "x y"), ("b", "&")])
    assert QueryParams.from_string(str(params)) == params


def test_headers_are_case_insensitive() -> None:
    headers = Headers([(b"content-type", b"text/plain"), (b"X-Thing", b"1")])
    assert headers["Content-Type"] == "text/plain"
    assert headers["CONTENT-TYPE"] == "text/plain"
    assert headers["x-thing"] == "1"
    assert "X-THING" in headers
    assert "nope" not in headers
    assert 42 not in headers  # type: ignore[comparison-overlap]
    assert headers.get("missing") is None
    assert len(headers) == 2
    assert set(headers) == {"content-type", "x-thing"}


def test_repeated_headers_fold_and_getlist_keeps_them() -> None:
    headers = Headers([(b"accept", b"text/html"), (b"Accept", b"application/json"), (b"x", b"1")])
    assert headers["accept"] == "text/html, application/json"
    assert headers.getlist("ACCEPT") == ["text/html", "application/json"]
    assert headers.getlist("missing") == []


def test_headers_decode_latin1() -> None:
    headers = Headers([(b"x-name", "José".encode("latin-1"))])
    assert headers["x-name"] == "José"


def test_headers_from_mapping() -> None:
    headers = Headers.from_mapping({"X-Token": "abc"})
    assert headers.raw == [(b"x-token", b"abc")]
    assert headers["x-token"] == "abc"


def _scope(**overrides: object) -> dict[str, object]:
    scope: dict[str, object] = {
        "type": "http",
        "scheme": "http",
        "server": ("10.0.0.1", 8000),
        "path": "/items",
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    scope.update(overrides)
    return scope


def test_url_from_host_header() -> None:
    url = URL.from_scope(_scope(headers=[(b"host", b"example.com:8080")], query_string=b"a=1"))
    assert (url.scheme, url.host, url.port, url.path, url.query) == (
        "http",
        "example.com",
        8080,
        "/items",
        "a=1",
    )
    assert str(url) == "http://example.com:8080/items?a=1"
    assert url.netloc == "example.com:8080"


def test_url_falls_back_to_server_address() -> None:
    url = URL.from_scope(_scope())
    assert str(url) == "http://10.0.0.1:8000/items"


def test_url_includes_root_path() -> None:
    url = URL.from_scope(_scope(root_path="/api", headers=[(b"host", b"h")]))
    assert url.path == "/api/items"


def test_url_ipv6_host() -> None:
    url = URL.from_scope(_scope(headers=[(b"host", b"[::1]:9000")]))
    assert url.host == "[::1]"
    assert url.port == 9000
    no_port = URL.from_scope(_scope(headers=[(b"host", b"[::1]")]))
    assert (no_port.host, no_port.port) == ("[::1]", None)


@pytest.mark.parametrize(
    ("scheme", "port", "netloc", "origin"),
    [
        ("http", 80, "h", "http://h"),
        ("https", 443, "h", "https://h"),
        ("https", 80, "h:80", "https://h:80"),
        ("ws", 80, "h", "http://h"),
        ("wss", 443, "h", "https://h"),
        ("wss", 8443, "h:8443", "https://h:8443"),
    ],
)
def test_url_netloc_and_origin(scheme: str, port: int, netloc: str, origin: str) -> None:
    url = URL(scheme, "h", port, "/")
    assert url.netloc == netloc
    assert url.origin == origin


def test_url_quotes_the_path_and_replace_changes_parts() -> None:
    url = URL("http", "h", None, "/a b/é", "x=1")
    assert str(url) == "http://h/a%20b/%C3%A9?x=1"
    other = url.replace(path="/c", query="", fragment="top")
    assert str(other) == "http://h/c#top"
    assert str(url) == "http://h/a%20b/%C3%A9?x=1"


def test_url_equality_and_hash() -> None:
    a = URL("http", "h", 80, "/x")
    assert a == URL("http", "h", None, "/x")
    assert a == "http://h/x"
    assert hash(a) == hash(URL("http", "h", None, "/x"))
    assert repr(a) == "URL('http://h/x')"


def test_state_attributes() -> None:
    state = State(user="ann")
    state.count = 1  # State has no __setattr__ for mypy
    assert state.user == "ann"
    assert state.count == 1
    assert "count" in state
    assert "missing" not in state
    with pytest.raises(AttributeError, match="missing"):
        state.missing  # noqa: B018


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ('token="quoted value"', {"token": "quoted value"}),
        ("a=1;;  ;=x; novalue; b = 2 ", {"a": "1", "b": "2"}),
        ("", {}),
        ("a=1; a=2", {"a": "2"}),
        ("eq=a=b", {"eq": "a=b"}),
        ('lone="', {"lone": '"'}),
    ],
)
def test_parse_cookies(header: str, expected: dict[str, str]) -> None:
    assert parse_cookies(header) == expected


def test_address_is_a_named_pair() -> None:
    address = Address("127.0.0.1", 5000)
    assert address.host == "127.0.0.1"
    assert address.port == 5000
    assert tuple(address) == ("127.0.0.1", 5000)
