"""The dependency-injection container on its own (request scoping through the app is in test_app)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from wirehall.di import Container, Lifetime, ResolutionScope
from wirehall.errors import ConfigurationError


class Clock:
    pass


class Store:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock


class Session:
    pass


def logged_session(log: list[str]) -> Callable[[], AsyncIterator[Session]]:
    """An async-generator factory of Sessions that logs "open" and "close" in `log`."""

    async def open_session() -> AsyncIterator[Session]:
        log.append("open")
        yield Session()
        log.append("close")

    return open_session


class Counter:
    made = 0

    def __init__(self) -> None:
        type(self).made += 1


async def resolve(container: Container, key: type) -> object:
    async with container.scope() as resolver:
        return await resolver.resolve(key)


async def test_singleton_is_built_once_at_start_and_shared() -> None:
    built: list[Clock] = []

    def make_clock() -> Clock:
        clock = Clock()
        built.append(clock)
        return clock

    container = Container()
    container.singleton(Clock, make_clock)
    assert built == []
    await container.start()
    assert len(built) == 1
    first = await container.get(Clock)
    second = await resolve(container, Clock)
    assert first is second is built[0]
    await container.aclose()


async def test_class_is_its_own_factory_and_its_parameters_are_resolved() -> None:
    container = Container()
    container.singleton(Clock)
    container.singleton(Store)
    await container.start()
    store = await container.get(Store)
    assert isinstance(store, Store)
    assert store.clock is await container.get(Clock)
    await container.aclose()


async def test_singleton_depending_on_a_singleton_registered_after_it_starts() -> None:
    container = Container()
    container.singleton(Store)  # needs Clock, which is registered next
    container.singleton(Clock)
    await asyncio.wait_for(container.start(), timeout=2)
    store = await container.get(Store)
    assert store.clock is await container.get(Clock)
    await container.aclose()


async def test_scoped_value_is_shared_within_a_scope_and_new_in_the_next() -> None:
    container = Container()
    container.scoped(Session)
    await container.start()
    async with container.scope() as one:
        a1 = await one.resolve(Session)
        a2 = await one.resolve(Session)
    async with container.scope() as two:
        b = await two.resolve(Session)
    assert a1 is a2
    assert a1 is not b


async def test_transient_is_new_every_time() -> None:
    container = Container()
    container.transient(Session)
    await container.start()
    async with container.scope() as resolver:
        first = await resolver.resolve(Session)
        second = await resolver.resolve(Session)
    assert first is not second
    assert first is not await container.get(Session)


async def test_async_factory_is_awaited() -> None:
    async def make_clock() -> Clock:
        await asyncio.sleep(0)
        return Clock()

    container = Container()
    container.singleton(Clock, make_clock)
    await container.start()
    assert isinstance(await container.get(Clock), Clock)
    await container.aclose()


async def test_async_generator_scoped_factory_tears_down_when_the_scope_ends() -> None:
    log: list[str] = []

    open_session = logged_session(log)

    container = Container()
    container.scoped(Session, open_session)
    await container.start()
    async with container.scope() as resolver:
        await resolver.resolve(Session)
        await resolver.resolve(Session)
        assert log == ["open"]
    assert log == ["open", "close"]


async def test_sync_generator_factory_tears_down_too() -> None:
    log: list[str] = []

    def open_session() -> Iterator[Session]:
        log.append("open")
        yield Session()
        log.append("close")

    container = Container()
    container.transient(Session, open_session)
    await container.start()
    async with container.scope() as resolver:
        await resolver.resolve(Session)
        await resolver.resolve(Session)
    assert log == ["open", "open", "close", "close"]


async def test_singleton_teardown_runs_at_aclose_newest_first() -> None:
    log: list[str] = []

    async def make_clock() -> AsyncIterator[Clock]:
        log.append("clock up")
        yield Clock()
        log.append("clock down")

    async def make_store(clock: Clock) -> AsyncIterator[Store]:
        log.append("store up")
        yield Store(clock)
        log.append("store down")

    container = Container()
    container.singleton(Clock, make_clock)
    container.singleton(Store, make_store)
    await container.start()
    assert log == ["clock up", "store up"]
    await container.aclose()
    assert log == ["clock up", "store up", "store down", "clock down"]


async def test_values_with_close_or_aclose_are_closed_at_shutdown() -> None:
    closed: list[str] = []

    class Pool:
        async def aclose(self) -> None:
            closed.append("pool")

    class File:
        def close(self) -> None:
            closed.append("file")

    container = Container()
    container.singleton(Pool)
    container.singleton(File)
    await container.start()
    assert closed == []
    await container.aclose()
    assert sorted(closed) == ["file", "pool"]


async def test_instances_are_not_closed_unless_owned() -> None:
    closed: list[str] = []

    class Pool:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)

    class OwnedPool(Pool):
        pass

    container = Container()
    container.instance(Pool, Pool("borrowed"))
    container.instance(OwnedPool, OwnedPool("owned"), owned=True)
    await container.start()
    await container.aclose()
    assert "borrowed" not in closed


async def test_transient_dependency_of_a_singleton_is_torn_down_at_shutdown() -> None:
    log: list[str] = []

    open_session = logged_session(log)

    class Service:
        def __init__(self, session: Session) -> None:
            self.session = session

    container = Container()
    container.transient(Session, open_session)
    container.singleton(Service)
    await container.start()
    assert log == ["open"]
    await container.aclose()
    assert log == ["open", "close"]


async def test_get_does_not_hand_out_a_value_that_is_already_torn_down() -> None:
    log: list[str] = []

    open_session = logged_session(log)

    container = Container()
    container.transient(Session, open_session)
    await container.start()
    await container.get(Session)
    assert log == ["open"], "the value from get() was torn down before the caller could use it"
    await container.aclose()


async def test_a_failing_singleton_fails_start() -> None:
    def broken() -> Clock:
        raise RuntimeError("database unreachable")

    container = Container()
    container.singleton(Clock, broken)
    with pytest.raises(
        ConfigurationError, match="building Clock failed: RuntimeError: database unreachable"
    ) as info:
        await container.start()
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_a_singleton_needing_a_scoped_value_is_refused_at_start() -> None:
    class Service:
        def __init__(self, session: Session) -> None:
            self.session = session

    container = Container()
    container.scoped(Session)
    container.singleton(Service)
    with pytest.raises(ConfigurationError, match=r"singleton .*Service needs Session, which is scoped"):
        await container.start()


async def test_get_refuses_a_scoped_type_outside_a_request() -> None:
    container = Container()
    container.scoped(Session)
    await container.start()
    with pytest.raises(ConfigurationError, match="scoped"):
        await container.get(Session)


async def test_resolving_an_unregistered_type_names_it() -> None:
    container = Container()
    with pytest.raises(ConfigurationError, match="Clock"):
        await container.get(Clock)


async def test_override_replaces_a_provider_inside_the_block_only() -> None:
    container = Container()
    container.singleton(Clock)
    await container.start()
    real = await container.get(Clock)
    fake = Clock()
    with container.override(Clock, fake):
        assert await container.get(Clock) is fake
        assert await resolve(container, Clock) is fake
    assert await container.get(Clock) is real
    await container.aclose()


async def test_override_is_seen_by_plans_compiled_earlier() -> None:
    container = Container()
    container.singleton(Clock)

    async def endpoint(clock: Clock) -> Clock:
        return clock

    plan = container.plan(endpoint)
    await container.start()
    fake = Clock()
    with container.override(Clock, fake):
        async with container.scope() as resolver:
            kwargs = plan.kwargs(resolver)
            if not isinstance(kwargs, dict):
                kwargs = await kwargs
        assert kwargs["clock"] is fake
    async with container.scope() as resolver:
        kwargs = plan.kwargs(resolver)
        if not isinstance(kwargs, dict):
            kwargs = await kwargs
    assert kwargs["clock"] is not fake
    await container.aclose()


async def test_override_of_an_unregistered_type_and_has() -> None:
    container = Container()
    assert not container.has(Clock)
    fake = Clock()
    with container.override(Clock, fake):
        assert container.has(Clock)
        assert await container.get(Clock) is fake
    assert not container.has(Clock)


async def test_nested_overrides_restore_the_outer_one() -> None:
    container = Container()
    outer, inner = Clock(), Clock()
    with container.override(Clock, outer):
        with container.override(Clock, inner):
            assert await container.get(Clock) is inner
        assert await container.get(Clock) is outer


def test_parameter_without_annotation_is_refused_at_plan_time() -> None:
    container = Container()

    async def endpoint(mystery) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"'mystery'.*no type annotation"):
        container.plan(endpoint, path_params=("room",))


def test_parameter_with_non_class_annotation_is_refused_at_plan_time() -> None:
    container = Container()

    async def endpoint(clock: Clock | None) -> None:
        pass

    with pytest.raises(ConfigurationError, match="'clock'"):
        container.plan(endpoint)


def test_unresolvable_forward_reference_is_reported() -> None:
    container = Container()

    async def endpoint(thing: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(ConfigurationError, match="type annotations"):
        container.plan(endpoint)


def test_factory_must_be_callable() -> None:
    container = Container()
    with pytest.raises(ConfigurationError, match="callable"):
        container.singleton(Clock, Clock())  # type: ignore[arg-type]


def test_factory_with_an_unresolvable_parameter_is_refused_at_registration() -> None:
    container = Container()

    def make_store(clock) -> Store:
        return Store(clock)

    with pytest.raises(ConfigurationError, match="factory of Store"):
        container.singleton(Store, make_store)


async def test_unregistered_type_is_reported_at_start_not_later() -> None:
    container = Container()

    async def endpoint(store: Store) -> None:
        pass

    container.plan(endpoint)  # fine now: Store may be registered later
    with pytest.raises(ConfigurationError, match=r"needs Store, which is not registered"):
        await container.start()
    container.singleton(Clock)
    container.singleton(Store)
    await container.start()
    await container.aclose()


class Request:
    pass


class SubRequest(Request):
    pass


def test_plan_sorts_parameters_by_source() -> None:
    container = Container()
    container.singleton(Clock)

    async def endpoint(room: str, req: SubRequest, clock: Clock, limit: int = 10) -> None:
        pass

    plan = container.plan(endpoint, path_params=("room",), context=(Request,))
    names = {p.name: p.kind.name for p in plan.params}
    assert names == {"room": "PATH", "req": "CONTEXT", "clock": "PROVIDED"}
    assert plan.provided_types == [Clock]


def test_plan_skips_leading_and_allowed_parameters() -> None:
    container = Container()

    def handler(self, message, clock: Clock) -> None:
        pass

    plan = container.plan(handler, skip=1, allow_unresolved=("message",))
    assert [p.name for p in plan.params] == ["clock"]


async def test_plan_kwargs_is_synchronous_once_everything_is_ready() -> None:
    container = Container()
    container.singleton(Clock)

    async def endpoint(room: str, clock: Clock) -> None:
        pass

    plan = container.plan(endpoint, path_params=("room",))
    await container.start()
    resolver = ResolutionScope(container)
    kwargs = plan.kwargs(resolver, {}, {"room": "lobby"})
    assert isinstance(kwargs, dict)
    assert kwargs == {"room": "lobby", "clock": await container.get(Clock)}
    await container.aclose()


async def test_plan_kwargs_awaits_scoped_values() -> None:
    container = Container()
    container.scoped(Session)

    async def endpoint(session: Session) -> None:
        pass

    plan = container.plan(endpoint)
    await container.start()
    async with container.scope() as resolver:
        pending = plan.kwargs(resolver)
        assert not isinstance(pending, dict)
        kwargs = await pending
        assert kwargs["session"] is await resolver.resolve(Session)


async def test_defaulted_parameter_of_unregistered_type_is_left_to_its_default() -> None:
    container = Container()

    async def endpoint(clock: Clock | None = None, store: Store = None) -> None:  # type: ignore[assignment]
        pass

    plan = container.plan(endpoint)
    assert plan.params == []
    await container.start()


async def test_register_explicit_lifetime_and_reregistration_replaces() -> None:
    container = Container()
    container.register(Session, lifetime=Lifetime.TRANSIENT)
    container.register(Session, lifetime=Lifetime.SINGLETON)
    await container.start()
    assert await container.get(Session) is await container.get(Session)
    await container.aclose()


async def test_singletons_are_rebuilt_after_a_restart() -> None:
    Counter.made = 0
    container = Container()
    container.singleton(Counter)
    await container.start()
    first = await container.get(Counter)
    await container.aclose()
    await container.start()
    second = await container.get(Counter)
    assert first is not second
    assert Counter.made == 2
    await container.aclose()


async def test_concurrent_first_resolutions_build_one_singleton() -> None:
    made: list[Clock] = []

    async def slow_clock() -> Clock:
        await asyncio.sleep(0.01)
        clock = Clock()
        made.append(clock)
        return clock

    container = Container()
    container.singleton(Clock, slow_clock)
    results = await asyncio.wait_for(
        asyncio.gather(*(resolve(container, Clock) for _ in range(5))), timeout=5
    )
    assert len(made) == 1
    assert all(r is made[0] for r in results)
    await container.aclose()
