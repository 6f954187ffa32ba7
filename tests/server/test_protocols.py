"""The head-limited uvicorn protocols, driven in-process through a fake transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from wirehall.errors import ConfigurationError
from wirehall.server.protocols import (
    HEAD_TIMEOUT_ENV,
    MAX_HEAD_SIZE_ENV,
    HeadLimits,
    LimitedH11Protocol,
    LimitedHttpToolsProtocol,
    check_uvicorn,
    http_protocol,
)

MAX = 2048
TIMEOUT = 0.3
PROTOCOLS = [LimitedHttpToolsProtocol, LimitedH11Protocol]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.wrote = asyncio.Event()
        self.closed = asyncio.Event()
        self.eof = False
        self.protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.wrote.set()

    def close(self) -> None:
        self.closed.set()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


def make_app(delay: float = 0.0) -> Callable[..., Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if delay:
            await asyncio.sleep(delay)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.fixture(autouse=True)
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_HEAD_SIZE_ENV, str(MAX))
    monkeypatch.setenv(HEAD_TIMEOUT_ENV, str(TIMEOUT))


def connect(protocol_class: type[asyncio.Protocol], delay: float = 0.0) -> tuple[Any, FakeTransport]:
    config = Config(app=make_app(delay), lifespan="off", log_config=None)
    config.load()
    protocol: Any = protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def wait_closed(transport: FakeTransport, within: float) -> float:
    started = time.monotonic()
    await asyncio.wait_for(transport.closed.wait(), within)
    return time.monotonic() - started


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_head_growing_past_the_cap_gets_431_and_a_close(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n")
    for _ in range(10):
        if transport.eof:
            break
        protocol.data_received(b"X-Filler: " + b"a" * 500 + b"\r\n")
    assert transport.eof  # answered; reading on only to let the client see the answer
    assert bytes(transport.written).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in transport.written
    answered = len(transport.written)
    protocol.data_received(b"a" * 512 * 1024)  # dropped, not parsed
    assert len(transport.written) == answered
    assert not transport.is_closing()
    protocol.data_received(b"a" * 600 * 1024)  # past the budget for a lingering close
    assert transport.is_closing()
    protocol.connection_lost(None)


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_refused_client_that_stops_sending_is_closed_after_a_moment(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    protocol.data_received(b"GET /" + b"a" * (MAX + 1))
    assert transport.eof
    waited = await wait_closed(transport, 5)
    assert 1 < waited < 3
    protocol.connection_lost(None)


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_long_url_gets_431(protocol_class: type[asyncio.Protocol]) -> None:
    protocol, transport = connect(protocol_class)
    protocol.data_received(b"GET /" + b"a" * 1000)
    assert not transport.is_closing()
    protocol.data_received(b"a" * 2000)
    assert bytes(transport.written).startswith(b"HTTP/1.1 431 ")
    protocol.connection_lost(None)


async def test_an_oversized_head_that_arrives_in_one_read_gets_431() -> None:
    # exact on httptools; h11 only caps what it buffers while the head is incomplete
    protocol, transport = connect(LimitedHttpToolsProtocol)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
    assert bytes(transport.written).startswith(b"HTTP/1.1 431 ")
    protocol.connection_lost(None)


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_head_under_the_cap_with_a_large_body_in_the_same_read_is_served(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    body = b"b" * (MAX * 4)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await asyncio.wait_for(_written(transport, b"ok"), 2)
    assert bytes(transport.written).startswith(b"HTTP/1.1 200 ")
    protocol.connection_lost(None)


async def _written(transport: FakeTransport, tail: bytes) -> None:
    while not bytes(transport.written).endswith(tail):
        transport.wrote.clear()
        await transport.wrote.wait()


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_connection_that_sends_nothing_is_closed_silently_after_the_timeout(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    waited = await wait_closed(transport, TIMEOUT * 5)
    assert waited >= TIMEOUT * 0.8
    assert transport.written == b""
    protocol.connection_lost(None)


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_slow_head_is_cut_off_when_its_time_is_up_however_often_it_sends(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    started = time.monotonic()
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    while not transport.is_closing() and time.monotonic() - started < TIMEOUT * 5:
        protocol.data_received(b"X-a: b\r\n")  # one line at a time, well within the cap
        await asyncio.sleep(TIMEOUT / 6)
    elapsed = time.monotonic() - started
    assert transport.is_closing()
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT * 3
    assert bytes(transport.written).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    protocol.connection_lost(None)


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_an_app_slower_than_the_head_timeout_is_not_cut_off(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class, delay=TIMEOUT * 2)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await asyncio.wait_for(_written(transport, b"ok"), TIMEOUT * 6)
    assert bytes(transport.written).startswith(b"HTTP/1.1 200 ")
    protocol.connection_lost(None)


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_the_next_head_is_timed_from_the_end_of_the_previous_response(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    protocol.timeout_keep_alive = 60  # so that only the head timeout can close it
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await asyncio.wait_for(_written(transport, b"ok"), 2)
    protocol.data_received(b"GET / HTTP/1.1\r\n")  # the next request, never finished
    waited = await wait_closed(transport, TIMEOUT * 5)
    assert waited < TIMEOUT * 2
    assert bytes(transport.written).count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 408 " in transport.written
    protocol.connection_lost(None)


def test_head_limits_come_from_the_environment() -> None:
    assert HeadLimits.from_env({}) == HeadLimits(16384, 10.0)
    limits = HeadLimits(4096, 2.5)
    assert HeadLimits.from_env(limits.to_env()) == limits
    with pytest.raises(ConfigurationError, match="WIREHALL_MAX_HEAD_SIZE='big'"):
        HeadLimits.from_env({MAX_HEAD_SIZE_ENV: "big"})
    with pytest.raises(ConfigurationError, match=">= 1024"):
        HeadLimits(100, 1.0)
    with pytest.raises(ConfigurationError, match="> 0"):
        HeadLimits(4096, 0)


def test_http_protocol_picks_the_implementation() -> None:
    assert http_protocol("auto") is LimitedHttpToolsProtocol
    assert http_protocol("httptools") is LimitedHttpToolsProtocol
    assert http_protocol("h11") is LimitedH11Protocol


def test_check_uvicorn_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    check_uvicorn()
    monkeypatch.delattr(HttpToolsProtocol, "on_headers_complete")
    with pytest.raises(
        ConfigurationError, match=r"lacks HttpToolsProtocol\.on_headers_complete.*tested with"
    ):
        check_uvicorn()
