"""Dependency injection by type annotation.

A `Container` maps types to providers. Endpoint, controller-method and WebSocket-hook
parameters are resolved from their annotations: path parameters by name, the current request or
socket by type, plain values (query, headers, cookies: `wirehall.params`) by name, the body
by its type, everything else from the container. Plans are compiled once, when a route is
registered, so a request pays only for dictionary look-ups and one conversion per value.

A request-scoped factory may take what an endpoint takes: the request or connection (by
type: `Connection` serves HTTP and WebSocket alike), path and query values, other
dependencies. Each `ResolutionScope` knows its connection and builds a scoped value once.

Lifetimes: `SINGLETON` (one per app, built at startup, closed at shutdown), `SCOPED`
(one per request or WebSocket connection, closed when it ends) and `TRANSIENT` (new on
every resolution). Factories may be classes, functions, coroutine functions, or
(async) generator functions whose code after `yield` is the teardown.

Why one module of ~730 lines: it holds one concept, the container, in three parts that
share its internals. `Container` registers providers and compiles a `CallPlan` per endpoint
or factory (`plan`, `_classify` and its helpers `_untyped` / `_by_type`: where each
parameter comes from); `CallPlan` and `ResolutionScope` run those plans per request and
call the container's underscored methods (`_ready`, `_provider`, `_singleton`, `_create`),
which are internal to this module; split apart, those would become an API between
modules. Converting request values is not here: it lives in
`wirehall.params`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import inspect
import logging
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from wirehall.errors import ConfigurationError
from wirehall.params import (
    MISSING,
    ParamInfo,
    RequestValidationError,
    compile_binder,
    compile_body,
    compile_json_body,
    is_body_type,
    is_value_type,
    param_info,
    split_annotation,
)

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
    PATH = 1  # a matched path parameter, as the router converted it
    CONTEXT = 2  # the request or connection
    PROVIDED = 3  # from the container
    VALUE = 4  # query, header, cookie or typed path value, through the plan's binder
    BODY = 5  # the body, through the plan's body reader


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
    request_params: list[ParamInfo] = field(default_factory=list)
    """What the call takes from the request (values and body), in declaration order."""
    connection_type: type[Any] | None = None
    """What the caller passes as the connection (None: the plan of a factory)."""
    _bind: Callable[[Any], dict[str, Any]] | None = None
    _read_body: Callable[[Any], typing.Awaitable[Any]] | None = None
    _body_name: str = ""
    _decode_json: Callable[[bytes], Any] | None = None

    @property
    def needs_container(self) -> bool:
        """Whether the call takes anything from the container; when not, `direct_kwargs`
        gives its arguments without a `ResolutionScope`."""
        return any(p.kind is _Kind.PROVIDED for p in self.params)

    @property
    def body_name(self) -> str:
        """The parameter the body is read into ("" when the call takes no body)."""
        return self._body_name

    @property
    def json_body(self) -> Callable[[bytes], Any] | None:
        """Turns the body's bytes into the body parameter's value, when it is JSON (else None:
        a form, read with `read_body`, or no body)."""
        return self._decode_json

    @property
    def read_body(self) -> Callable[[Any], typing.Awaitable[Any]] | None:
        """Reads the body parameter's value from the request (None: the call takes no body)."""
        return self._read_body

    def direct_kwargs(self, connection: Any, path_params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The keyword arguments but the body, for a call that takes nothing from the container
        (`needs_container` is False): what `kwargs` gives, without a resolution scope."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.kind is _Kind.PATH:
                values[param.name] = path_params[param.name]  # type: ignore[index]
            elif isinstance(connection, param.key):  # _Kind.CONTEXT: the request or a base of it
                values[param.name] = connection
            else:
                raise _wrong_connection(param.key, connection, self.where)
        if self._bind is not None:
            values.update(self._bind(connection))
        return values

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

    @property
    def takes_request_values(self) -> bool:
        """Whether the call reads values or the body from the request."""
        return bool(self.request_params)

    @property
    def context_types(self) -> list[type[Any]]:
        """The connection types the call takes (`Request`, `Connection`, ...)."""
        return [p.key for p in self.params if p.kind is _Kind.CONTEXT]

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
                if context is not None and param.key in context:
                    values[param.name] = context[param.key]
                else:
                    values[param.name] = resolver.connection_as(param.key, self.where)
            elif kind is _Kind.PROVIDED:
                value = container._ready(param.key)
                if value is _MISSING:
                    if pending is None:
                        pending = []
                    pending.append(param)
                else:
                    values[param.name] = value
        if self._bind is not None:
            values.update(self._values(resolver))
        if pending is None and self._read_body is None:
            return values
        return self._finish(values, pending, resolver)

    def _values(self, resolver: ResolutionScope) -> dict[str, Any]:
        assert self._bind is not None
        try:
            return self._bind(resolver.connection_as(object, self.where))
        except RequestValidationError as exc:
            raise resolver.refusal(exc) from None

    async def _finish(
        self, values: dict[str, Any], pending: list[_Param] | None, resolver: ResolutionScope
    ) -> dict[str, Any]:
        if self._read_body is not None:  # first: a bad body is answered before building anything
            values[self._body_name] = await self._read_body(resolver.connection_as(object, self.where))
        if pending is not None:
            for param in pending:
                values[param.name] = await resolver.resolve(param.key)
        return values


class ResolutionScope:
    """One request's or connection's view of the container: caches scoped values.

    Use as `async with container.scope() as resolver:`; leaving closes what it built.
    """

    __slots__ = ("_cache", "_stack", "connection", "container", "invalid_input")

    def __init__(
        self,
        container: Container,
        stack: contextlib.AsyncExitStack | None = None,
        *,
        connection: Any = None,
        invalid_input: Callable[[RequestValidationError], Exception] | None = None,
    ) -> None:
        self.container = container
        self._cache: dict[type[Any], Any] = {}
        self._stack = stack
        self.connection = connection
        """The request or WebSocket connection this scope serves (None outside one)."""
        self.invalid_input = invalid_input
        """Turns a value that does not fit into the error to raise (default: the 422 itself)."""

    def connection_as(self, cls: type[T], where: str) -> T:
        """The connection, checked to be a `cls`."""
        connection = self.connection
        if connection is None:
            raise ConfigurationError(
                f"{where} takes the request or its values, and was called outside a request; "
                "register it with container.scoped(...) and use it from an endpoint"
            )
        if isinstance(connection, cls):
            return connection
        raise _wrong_connection(cls, connection, where)

    def refusal(self, error: RequestValidationError) -> Exception:
        """The exception to raise for a request value that does not fit."""
        return error if self.invalid_input is None else self.invalid_input(error)

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

    @property
    def holds_values(self) -> bool:
        """Whether anything was built in this scope (else `aclose` has nothing to do)."""
        return self._stack is not None or bool(self._cache)

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

    def __init__(self, *, connection_types: Collection[type[Any]] = ()) -> None:
        """`connection_types`: base classes a factory may take to receive the current
        request or connection (the app passes `Connection`)."""
        self._connection_types = tuple(connection_types)
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
        provider.plan = self.plan(factory, where=f"factory of {_name(key)}", dependency=True)
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
        bodies: bool = False,
        dependency: bool = False,
    ) -> CallPlan:
        """Compile how to call `func`; a parameter with no possible source is an error now.

        Args:
            path_params: names filled from the matched path.
            context: base types filled by the caller (the request, the socket, ...); the
                first is what the caller passes as the connection.
            skip: leading positional parameters the caller passes itself (`self`, a message).
            allow_unresolved: parameter names the caller passes itself.
            bodies: whether a parameter may be read from the request body (HTTP endpoints).
            dependency: `func` is a factory: the connection is taken by the container's
                connection types, and a plain value comes from the path when the route has
                a parameter of its name, else from the query.
        """
        where = where or _describe(func)
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"cannot inspect the parameters of {where}: {exc}") from exc
        try:
            target = func.__init__ if inspect.isclass(func) else func
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot resolve the type annotations of {where}: {exc}; "
                "import the annotated types at module level"
            ) from exc
        bases = (*context, *self._connection_types)
        plan = CallPlan(func, where=where, connection_type=None if dependency or not context else bases[0])
        for index, param in enumerate(signature.parameters.values()):
            if index < skip or param.name in allow_unresolved:
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            default = MISSING if param.default is param.empty else param.default
            entry = self._classify(
                param.name, hints.get(param.name, _MISSING), default, bases, path_params, dependency, where
            )
            if entry is None:
                continue  # a defaulted parameter of a type nobody provides: left to its default
            if isinstance(entry, _Param):
                plan.params.append(entry)
                continue
            info = entry if not dependency or entry.source != "query" else _path_first(entry)
            if info.source == "body" and not bodies:
                raise ConfigurationError(
                    f"parameter {param.name!r} of {where} would be read from the request body, which "
                    + (
                        "a dependency cannot read; take it in the endpoint"
                        if dependency
                        else "is not available here"
                    )
                    + f" ({info.annotation!r}); register its type in the container if it is a service"
                )
            plan.request_params.append(info)
        self._compile_values(plan)
        self._plans.append(plan)
        return plan

    def _classify(
        self,
        name: str,
        annotation: Any,
        default: Any,
        bases: tuple[type[Any], ...],
        path_params: Collection[str],
        dependency: bool,
        where: str,
    ) -> _Param | ParamInfo | None:
        """Where one parameter comes from: a _Param (path, context, provided), a ParamInfo
        (from the request), or None (left to its default)."""
        if annotation is _MISSING:
            return _untyped(name, default, path_params, where)
        stripped, marker, _ = split_annotation(annotation)
        if marker is not None:
            return param_info(name, annotation, default, None, path_names=tuple(path_params))
        bare = _bare(stripped)
        if name in path_params:
            if bare is str or bare is Any or not is_value_type(stripped):
                return _Param(name, _Kind.PATH, name)
            return param_info(name, annotation, default, None, path_names=(name,))
        if isinstance(bare, type):
            base = next((c for c in bases if issubclass(bare, c)), None)
            if base is not None:
                # an endpoint's caller passes its context by base type; a factory checks the connection
                return _Param(name, _Kind.CONTEXT, bare if dependency else base)
            if self.has(bare):
                return _Param(name, _Kind.PROVIDED, bare, default)
        return _by_type(name, annotation, default, path_params, where)

    def _compile_values(self, plan: CallPlan) -> None:
        values = [p for p in plan.request_params if p.source != "body"]
        bodies = [p for p in plan.request_params if p.source == "body"]
        if len(bodies) > 1:
            raise ConfigurationError(
                f"{plan.where} takes {len(bodies)} bodies ({', '.join(p.name for p in bodies)}); "
                "a request has one: gather them in one Struct"
            )
        if values:
            plan._bind = compile_binder(values)
        if bodies:
            plan._read_body = compile_body(bodies[0], plan.where)
            plan._body_name = bodies[0].name
            if bodies[0].media_type == "application/json":
                plan._decode_json = compile_json_body(bodies[0], plan.where)

    def _connection_problems(self, plan: CallPlan, connection: type[Any]) -> list[str]:
        problems: list[str] = []
        seen: set[type[Any]] = set()
        stack = list(plan.provided_types)
        while stack:
            key = stack.pop()
            if key in seen or key not in self._providers or key in self._overrides:
                continue
            seen.add(key)
            sub = self._providers[key].plan
            if sub is None:
                continue
            stack.extend(sub.provided_types)
            problems.extend(
                f"{sub.where} takes a {_name(wanted)}, which {plan.where} does not have (it gets a "
                f"{_name(connection)}); take Connection to serve HTTP and WebSocket alike"
                for wanted in sub.context_types
                if not issubclass(connection, wanted)
            )
        return problems

    def dependency_params(self, plan: CallPlan) -> list[ParamInfo]:
        """What the request-scoped dependencies of `plan` take from the request, transitively."""
        found: list[ParamInfo] = []
        seen: set[type[Any]] = set()
        stack = list(plan.provided_types)
        while stack:
            key = stack.pop()
            if key in seen or not self.has(key):
                continue
            seen.add(key)
            sub = self._provider(key).plan
            if sub is not None:
                found.extend(sub.request_params)
                stack.extend(sub.provided_types)
        return found

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
        problems.extend(
            f"the singleton {_name(provider.key)} takes the request or its values; register it "
            "with container.scoped(...)"
            for provider in self._providers.values()
            if provider.lifetime is Lifetime.SINGLETON
            and provider.plan is not None
            and (provider.plan.context_types or provider.plan.request_params)
        )
        for plan in self._plans:
            if plan.connection_type is not None:
                problems.extend(self._connection_problems(plan, plan.connection_type))
            problems.extend(
                f"{plan.where} reads {p.name!r} from the body, but {_name(_bare(p.annotation))} is also "
                "registered in the container; write Annotated[T, Body()] for the body, or register "
                "the type before the route for a dependency"
                for p in plan.request_params
                if p.source == "body"
                and p.media_type == "application/json"
                and not p.explicit
                and isinstance(_bare(p.annotation), type)
                and self.has(_bare(p.annotation))
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

    def scope(
        self,
        connection: Any = None,
        *,
        invalid_input: Callable[[RequestValidationError], Exception] | None = None,
    ) -> ResolutionScope:
        """A scope for one request or connection (`connection`: what its factories may take)."""
        return ResolutionScope(self, connection=connection, invalid_input=invalid_input)

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


def _bare(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _untyped(name: str, default: Any, path_params: Collection[str], where: str) -> _Param | ParamInfo:
    """A parameter without an annotation: a path parameter by name, or a query string."""
    if name in path_params:
        return _Param(name, _Kind.PATH, name)
    if default is not MISSING:
        return param_info(name, str, default, None)  # an untyped `q=None`: a query string
    raise ConfigurationError(
        f"parameter {name!r} of {where} cannot be resolved: it is not a path parameter "
        f"({', '.join(sorted(path_params)) or 'none'}) and has no type annotation; "
        "annotate it (str, int, ... for a query value, a registered type for a dependency)"
    )


def _by_type(
    name: str, annotation: Any, default: Any, path_params: Collection[str], where: str
) -> _Param | ParamInfo | None:
    """A typed parameter that is neither a path parameter, the context nor a provided service:
    a value or body from the request, a class to be registered, or left to its default."""
    stripped = split_annotation(annotation)[0]
    if is_value_type(stripped) or is_body_type(stripped):
        return param_info(name, annotation, default, None)
    if default is not MISSING:
        return None
    bare = _bare(stripped)
    if isinstance(bare, type):
        return _Param(name, _Kind.PROVIDED, bare, default)
    raise ConfigurationError(
        f"parameter {name!r} of {where} cannot be resolved: {annotation!r} is neither a value taken from "
        f"the request (str, int, float, bool, Enum, Literal, UUID, dates, list[...] of them, "
        f"T | None), a body type (a msgspec Struct, dataclass or TypedDict), nor a class "
        f"registered in the container; path parameters: {', '.join(sorted(path_params)) or 'none'}"
    )


def _path_first(info: ParamInfo) -> ParamInfo:
    return dataclasses.replace(info, path_first=True)


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


def _wrong_connection(cls: type[Any], connection: object, where: str) -> ConfigurationError:
    return ConfigurationError(
        f"{where} takes a {_name(cls)}, but it was called for a {type(connection).__qualname__}; "
        "take Connection to serve HTTP requests and WebSocket connections alike"
    )


def _name(key: Any) -> str:
    return getattr(key, "__qualname__", repr(key))


def _describe(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", "?")
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"
