"""MemoryBackplane specifics and `backplane_from_url`."""

from __future__ import annotations

import asyncio

import pytest

from wirehall.backplane import MemoryBackplane, MemoryHub, backplane_from_url
from wirehall.errors import BackplaneError, ConfigurationError


async def test_must_be_started_before_use() -> None:
    backplane = MemoryBackplane()
    with pytest.raises(BackplaneError, match="call start"):
        await backplane.publish("room:x", b"x")
    with pytest.raises(BackplaneError, match="call start"):
        await backplane.subscribe("room:x")


async def test_close_is_idempotent_and_final() -> None:
    backplane = MemoryBackplane()
    await backplane.start()
    await backplane.close()
    await backplane.close()
    with pytest.raises(BackplaneError, match="closed"):
        await backplane.start()
    with pytest.raises(BackplaneError, match="closed"):
        await backplane.add_presence("room", "m", "ann")
    assert [item async for item in backplane.messages()] == []


async def test_backplanes_without_a_shared_hub_are_separate_clusters() -> None:
    first, second = MemoryBackplane(), MemoryBackplane()
    for backplane in (first, second):
        await backplane.start()
        await backplane.subscribe("room:x")
    await first.add_presence("room", f"{first.node_id}.1", "ann")
    await first.publish("room:x", b"only mine")
    assert await second.presence("room") == {}
    messages = second.messages()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(messages), 0.05)
    await first.close()
    await second.close()


async def test_close_leaves_the_hub_clean() -> None:
    hub = MemoryHub()
    backplane = MemoryBackplane(hub, node_id="n1")
    assert backplane.node_id == "n1"
    await backplane.start()
    await backplane.subscribe("room:x")
    await backplane.add_presence("room", "n1.1", "ann")
    await backplane.close()
    assert hub.subscribers == {}
    assert hub.presence == {}


async def test_payloads_queued_before_close_are_still_delivered() -> None:
    backplane = MemoryBackplane()
    await backplane.start()
    await backplane.subscribe("c")
    await backplane.publish("c", b"1")
    await backplane.publish("c", b"2")
    await backplane.close()
    assert [item async for item in backplane.messages()] == [("c", b"1"), ("c", b"2")]


def test_backplane_from_url_builds_memory_backplanes() -> None:
    first, second = backplane_from_url("memory://"), backplane_from_url("MEMORY://")
    assert isinstance(first, MemoryBackplane)
    assert isinstance(second, MemoryBackplane)
    assert first.node_id != second.node_id


def test_backplane_from_url_builds_redis_backplanes_lazily() -> None:
    redis_module = pytest.importorskip("wirehall.backplane.redis")
    backplane = backplane_from_url("redis://127.0.0.1:6379/0")
    assert isinstance(backplane, redis_module.RedisBackplane)


@pytest.mark.parametrize("url", ["", "memory", "kafka://broker:9092", "http://example.com", "redis"])
def test_unknown_backplane_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        backplane_from_url(url)
    assert str(info.value) == (
        f"WIREHALL_BACKPLANE={url!r} is not understood; use memory:// or redis://HOST:PORT/DB"
    )
