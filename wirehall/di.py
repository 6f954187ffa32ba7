"""Dependency injection by type annotation.

A `Container` maps types to providers. Endpoint, controller-method and WebSocket-hook
parameters are resolved from their annotations: path parameters by name, the current request or
socket by type, everything else from the container. Plans are compiled once, when a
route is registered, so a request pays only for dictionary look-ups.

Lifetimes: `SINGLETON` (one per app, built at startup, closed at shutdown), `SCOPED`
(one per request or WebSocket connection, closed when it ends) and `TRANSIENT` (new on
every resolution). Factories may be classes, functions, coroutine functions, or
(async) generator functions whose code after `yield` is the teardown.

One concept, a little past ~400 lines: `CallPlan` and `ResolutionScope` are the
container's own parts and call its underscored methods (`_ready`, `_provider`,
`_singleton`, `_create`), which are internal to this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from wirehall.errors import ConfigurationError

__all__ = ["CallPlan", "Container", "Lifetime", "ResolutionScope"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MISSING = object()


class Lifetime(enum.Enum):
    """How long a provided value lives."""

    SINGLETON = "singleton"
    SCOPED = "scoped"
    TRANSIENT = "transient"


@dataclass(slots=True)
class _Provider:
    key: type[Any]
    factory: Callable[..., Any] | None
    lifetime: Lifetime
    instance: Any = _MISSING
    plan: CallPlan | None = None
    owned: bool = True  # whether the container closes the value at shutdown
    lock: asyncio.Lock | None = None


class _Kind(enum.IntEnum):
    PATH = 1
    CONTEXT = 2
    PROVIDED = 3


@dataclass(slots=True)
class _Param:
    name: str
    kind: _Kind
    key: Any
    default: Any = _MISSING


@dataclass(slots=True)
class CallPlan:
    """How to call one function: where each of its parameters comes from."""

    func: Callable[..., Any]
    params: list[_Param] = field(default_factory=list)
    where: str = ""

    @property
    def provided_types(self) -> list[type[Any]]:
        """The types this call needs from the container."""
        return [p.key for p in self.params if p.kind is _Kind.PROVIDED]

    @property
    def takes_context(self) -> bool:
        """Whether the call needs a context value (the request, the socket) in `kwargs`."""
        return any(p.kind is _Kind.CONTEXT for p in self.params)

    @property
    def takes_path_params(self) -> bool:
        """Whether the call needs the matched path parameters in `kwargs`."""
        return any(p.kind is _Kind.PATH for p in self.params)

    def kwargs(
        self,
        resolver: ResolutionScope,
        context: Mapping[type[Any], Any] | None = None,
        path_params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | typing.Awaitable[dict[str, Any]]:
        """The keyword arguments, synchronously when every value is at hand, else awaitable."""
        values: dict[str, Any] = {}
        pending: list[_Param] | None = None
        container = resolver.container
        for param in self.params:
            kind = param.kind
            if kind is _Kind.PATH:
                values[param.name] = path_params[param.name]  # type: ignore[index]
            elif kind is _Kind.CONTEXT:
                values[param.name] = context[param.key]  # type: ignore[index]
            else:
                value = container._ready(param.key)
                if value is _MISSING:
                    if pending is None:
                        pending = []
                    pending.append(param)
                else:
                    values[param.name] = value
        if pending is None:
            return values
        return self._finish(values, pending, resolver)

    async def _finish(
        self, values: dict[str, Any], pending: list[_Param], resolver: ResolutionScope
    ) -> dict[str, Any]:
        for param in pending:
            values[param.name] = await resolver.resolve(param.key)
        return values


class ResolutionScope:
    """One request's or connection's view of the container: caches scoped values.

    Use as `async with container.scope() as resolver:`; leaving closes what it built.
    """

    __slots__ = ("_cache", "_stack", "container")

    def __init__(self, container: Container, stack: contextlib.AsyncExitStack | None = None) -> None:
        self.container = container
        self._cache: dict[type[Any], Any] = {}
        self._stack = stack

    async def resolve(self, key: type[T]) -> T:
        """The value for `key` in this scope."""
        provider = self.container._provider(key)
        if provider.lifetime is Lifetime.SINGLETON:
            return cast(T, await self.container._singleton(provider))
        if provider.lifetime is Lifetime.SCOPED:
            value = self._cache.get(key, _MISSING)
            if value is _MISSING:
                value = self._cache[key] = await self._build(provider)
            return cast(T, value)
        return cast(T, await self._build(provider))

    async def _build(self, provider: _Provider) -> Any:
        if self._stack is None:
            self._stack = contextlib.AsyncExitStack()
        return await self.container._create(provider, self, self._stack)

    async def aclose(self) -> None:
        """Run the teardown of everything built in this scope, newest first."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._cache.clear()

    async def __aenter__(self) -> ResolutionScope:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Container:
    """Maps types to providers. One per app; there is no global container."""

    def __init__(self) -> None:
        self._providers: dict[type[Any], _Provider] = {}
        self._overrides: dict[type[Any], _Provider] = {}
        self._ready_values: dict[type[Any], Any] = {}
        self._plans: list[CallPlan] = []
        self._stack = contextlib.AsyncExitStack()

    # registration -------------------------------------------------------

    def register(
        self,
        key: type[T],
        factory: Callable[..., Any] | None = None,
        *,
        lifetime: Lifetime = Lifetime.SINGLETON,
    ) -> None:
        """Provide `key` by calling `factory` (default: the class itself).

        The factory's own parameters are resolved from the container.
        """
        factory = factory if factory is not None else key
        if not callable(factory):
            raise ConfigurationError(f"the factory for {_name(key)} must be callable, got {factory!r}")
        provider = _Provider(key, factory, lifetime)
        provider.plan = self.plan(factory, where=f"factory of {_name(key)}")
        self._providers[key] = provider
        self._ready_values.pop(key, None)

    def singleton(self, key: type[T], factory: Callable[..., Any] | None = None) -> None:
        """One value for the app's whole life, built at startup."""
        self.register(key, factory, lifetime=Lifetime.SINGLETON)

    def scoped(self, key: type[T], factory: Callable[..., Any] | None = None) -> None:
        """One value per request or WebSocket connection."""
        self.register(key, factory, lifetime=Lifetime.SCOPED)

    def transient(self, key: type[T], factory: Callable[..., Any] | None = None) -> None:
        """A new value every time it is asked for."""
        self.register(key, factory, lifetime=Lifetime.TRANSIENT)

    def instance(self, key: type[T], value: T, *, owned: bool = False) -> None:
        """Provide an existing value (closed at shutdown only when `owned`)."""
        provider = _Provider(key, None, Lifetime.SINGLETON, value, owned=owned)
        self._providers[key] = provider
        self._ready_values[key] = value

    def has(self, key: type[Any]) -> bool:
        """Whether `key` can be provided."""
        return key in self._providers or key in self._overrides

    @contextlib.contextmanager
    def override(self, key: type[T], value: T) -> Iterator[None]:
        """Provide `value` for `key` inside the `with` block (for tests)."""
        previous = self._overrides.get(key)
        self._overrides[key] = _Provider(key, None, Lifetime.SINGLETON, value, owned=False)
        self._ready_values[key] = value
        try:
            yield
        finally:
            if previous is None:
                del self._overrides[key]
            else:
                self._overrides[key] = previous
            self._ready_values.pop(key, None)
            self._refresh_ready(key)

    # planning -----------------------------------------------------------

    def plan(
        self,
        func: Callable[..., Any],
        *,
        path_params: Collection[str] = (),
        context: Collection[type[Any]] = (),
        skip: int = 0,
        where: str = "",
        allow_unresolved: Collection[str] = (),
    ) -> CallPlan:
        """Compile how to call `func`; a parameter with no possible source is an error now.

        Args:
            path_params: names filled from the matched path.
            context: base types filled by the caller (the request, the socket, ...).
            skip: leading positional parameters the caller passes itself (`self`, a message).
            allow_unresolved: parameter names the caller passes itself.
        """
        where = where or _describe(func)
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"cannot inspect the parameters of {where}: {exc}") from exc
        try:
            target = func.__init__ if inspect.isclass(func) else func
            hints = typing.get_type_hints(target)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot resolve the type annotations of {where}: {exc}; "
                "import the annotated types at module level"
            ) from exc
        plan = CallPlan(func, where=where)
        for index, param in enumerate(signature.parameters.values()):
            if index < skip or param.name in allow_unresolved:
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = hints.get(param.name, _MISSING)
            if param.name in path_params:
                plan.params.append(_Param(param.name, _Kind.PATH, param.name))
                continue
            if isinstance(annotation, type):
                base = next((c for c in context if issubclass(annotation, c)), None)
                if base is not None:
                    plan.params.append(_Param(param.name, _Kind.CONTEXT, base))
                    continue
                if param.default is not param.empty and not self.has(annotation):
                    continue
                plan.params.append(_Param(param.name, _Kind.PROVIDED, annotation, param.default))
                continue
            if param.default is not param.empty:
                continue
            raise ConfigurationError(
                f"parameter {param.name!r} of {where} cannot be resolved: it is not a path "
                f"parameter ({', '.join(sorted(path_params)) or 'none'}) and "
                + ("has no type annotation" if annotation is _MISSING else f"{annotation!r} is not a class")
                + "; annotate it with a type registered in the container"
            )
        self._plans.append(plan)
        return plan

    def validate(self) -> None:
        """Check that every planned parameter has a provider; called at app startup."""
        problems = [
            f"{plan.where} needs {_name(key)}, which is not registered"
            for plan in self._plans
            for key in plan.provided_types
            if not self.has(key)
        ]
        problems.extend(
            f"the singleton {_name(provider.key)} needs {_name(key)}, which is scoped to a request; "
            "make it a singleton or the dependant scoped"
            for provider in self._providers.values()
            if provider.lifetime is Lifetime.SINGLETON and provider.plan is not None
            for key in provider.plan.provided_types
            if self.has(key) and self._provider(key).lifetime is Lifetime.SCOPED
        )
        if problems:
            raise ConfigurationError(
                "unresolvable dependencies: "
                + "; ".join(dict.fromkeys(problems))
                + ". Register them with app.container.singleton(...) / scoped(...)"
            )

    # resolution ---------------------------------------------------------

    def _provider(self, key: type[Any]) -> _Provider:
        provider = self._overrides.get(key) or self._providers.get(key)
        if provider is None:
            raise ConfigurationError(f"no provider is registered for {_name(key)}")
        return provider

    def _ready(self, key: type[Any]) -> Any:
        return self._ready_values.get(key, _MISSING)

    def _refresh_ready(self, key: type[Any]) -> None:
        provider = self._providers.get(key)
        if provider is not None and provider.instance is not _MISSING:
            self._ready_values[key] = provider.instance

    def scope(self) -> ResolutionScope:
        """A scope for one request or connection."""
        return ResolutionScope(self)

    async def get(self, key: type[T]) -> T:
        """Resolve `key` outside any request (singletons and transients only)."""
        provider = self._provider(key)
        if provider.lifetime is Lifetime.SCOPED:
            raise ConfigurationError(f"{_name(key)} is scoped; resolve it inside a request")
        # built on the container's own stack: torn down at `aclose`, never before it is used
        return await ResolutionScope(self, self._stack).resolve(key)

    async def _singleton(self, provider: _Provider) -> Any:
        if provider.instance is _MISSING:
            if provider.lock is None:
                provider.lock = asyncio.Lock()
            async with provider.lock:
                if provider.instance is _MISSING:
                    # what a singleton's factory needs lives as long as the singleton
                    resolver = ResolutionScope(self, self._stack)
                    provider.instance = await self._create(provider, resolver, self._stack)
                    if provider.key not in self._overrides:
                        self._ready_values[provider.key] = provider.instance
        return provider.instance

    async def _create(
        self, provider: _Provider, resolver: ResolutionScope, stack: contextlib.AsyncExitStack
    ) -> Any:
        factory = provider.factory
        assert factory is not None
        assert provider.plan is not None
        kwargs = provider.plan.kwargs(resolver)
        if not isinstance(kwargs, dict):
            kwargs = await kwargs
        if inspect.isasyncgenfunction(factory):
            return await stack.enter_async_context(contextlib.asynccontextmanager(factory)(**kwargs))
        if inspect.isgeneratorfunction(factory):
            return stack.enter_context(contextlib.contextmanager(factory)(**kwargs))
        value = factory(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        if provider.owned:
            _close_later(stack, value)
        return value

    async def start(self) -> None:
        """Build every singleton now, so that a broken one fails startup, not a request."""
        self.validate()
        for provider in list(self._providers.values()):
            if provider.lifetime is Lifetime.SINGLETON and provider.key not in self._overrides:
                try:
                    await self._singleton(provider)
                except ConfigurationError:
                    raise
                except Exception as exc:
                    raise ConfigurationError(
                        f"building {_name(provider.key)} failed: {type(exc).__name__}: {exc}"
                    ) from exc

    async def aclose(self) -> None:
        """Close the singletons the container built, newest first."""
        try:
            await self._stack.aclose()
        finally:
            self._stack = contextlib.AsyncExitStack()
            for provider in self._providers.values():
                if provider.factory is not None:
                    provider.instance = _MISSING
                    self._ready_values.pop(provider.key, None)


def _close_later(stack: contextlib.AsyncExitStack, value: Any) -> None:
    aclose = getattr(value, "aclose", None)
    if callable(aclose):
        stack.push_async_callback(aclose)
        return
    close = getattr(value, "close", None)
    if callable(close):
        if inspect.iscoroutinefunction(close):
            stack.push_async_callback(close)
        else:
            stack.callback(close)


def _name(key: Any) -> str:
    return getattr(key, "__qualname__", repr(key))


def _describe(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", "?")
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"
