"""Tests for wirehall/backplane/_resp.py: RESP2 parsing whatever way the bytes arrive."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirehall.backplane._resp import INCOMPLETE, Reply, RespError, RespReader, pack_publish


def encode(reply: Reply) -> bytes:
    """A reference RESP2 encoder (what Redis would send)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if isinstance(reply, RespError):
        return b"-%s\r\n" % str(reply).encode()
    return b"*%d\r\n" % len(reply) + b"".join(encode(item) for item in reply)


replies = st.recursive(
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.binary(max_size=300),
    lambda children: st.lists(children, max_size=6),
    max_leaves=30,
)


def _same(parsed: Reply, expected: Reply) -> bool:
    if isinstance(expected, RespError):
        return isinstance(parsed, RespError) and str(parsed) == str(expected)
    return parsed == expected


async def _read_all(chunks: list[bytes], count: int) -> list[Reply]:
    stream = asyncio.StreamReader()
    reader = RespReader(stream)
    for chunk in chunks:
        stream.feed_data(chunk)
    stream.feed_eof()
    return [await reader.reply() for _ in range(count)]


@given(st.lists(replies, min_size=1, max_size=8), st.data())
def test_any_replies_split_anywhere_parse_back(expected: list[Reply], data: st.DataObject) -> None:
    wire = b"".join(encode(reply) for reply in expected)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    parsed = asyncio.run(_read_all([chunk for chunk in chunks if chunk], len(expected)))
    assert all(_same(p, e) for p, e in zip(parsed, expected, strict=True))


@given(st.binary(max_size=100), st.binary(max_size=2000))
def test_pack_publish_is_the_publish_command(channel: bytes, payload: bytes) -> None:
    parsed = asyncio.run(_read_all([pack_publish(channel, payload)], 1))
    assert parsed == [[b"PUBLISH", channel, payload]]


async def test_error_replies_and_simple_strings() -> None:
    parsed = await _read_all([b"+OK\r\n-ERR unknown command\r\n:42\r\n*-1\r\n"], 4)
    assert parsed[0] == b"OK"
    assert isinstance(parsed[1], RespError)
    assert str(parsed[1]) == "ERR unknown command"
    assert parsed[2:] == [42, None]


async def test_pop_waits_for_a_whole_reply() -> None:
    stream = asyncio.StreamReader()
    reader = RespReader(stream)
    assert reader.pop() is INCOMPLETE
    stream.feed_data(b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$5\r\nhel")
    await reader.fill()
    assert reader.pop() is INCOMPLETE
    stream.feed_data(b"lo\r\n:1\r\n")
    await reader.fill()
    assert reader.pop() == [b"message", b"room", b"hello"]
    assert reader.pop() == 1
    assert reader.pop() is INCOMPLETE


@pytest.mark.parametrize("wire", [b"?what\r\n", b"$abc\r\n", b"*x\r\n", b":1.5\r\n"])
async def test_garbage_is_a_resp_error(wire: bytes) -> None:
    stream = asyncio.StreamReader()
    stream.feed_data(wire)
    reader = RespReader(stream)
    await reader.fill()
    with pytest.raises(RespError):
        reader.pop()


async def test_a_closed_stream_is_a_connection_error_and_broken() -> None:
    stream = asyncio.StreamReader()
    reader = RespReader(stream)
    assert not reader.is_broken
    stream.feed_data(b"$5\r\nhe")
    stream.feed_eof()
    with pytest.raises(ConnectionError):
        await reader.reply()
    assert reader.is_broken
