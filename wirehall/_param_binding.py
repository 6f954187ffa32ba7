"""Binding plain values (path, query, headers, cookies) to an endpoint's parameters: the
function `compile_binder` builds once per route and a request calls. Re-exported by
`wirehall.params`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import unquote

import msgspec

from wirehall._decoding import convert, location
from wirehall._param_spec import (
    _NONE,
    _UNION_TYPE,
    MISSING,
    ErrorDetail,
    ParamInfo,
    RequestValidationError,
    _bare,
)


class ValueSource(Protocol):
    """What values are read from: a `Request` or a WebSocket connection (a `Connection`)."""

    scope: Mapping[str, Any]

    @property
    def path_params(self) -> dict[str, Any]: ...

    @property
    def headers(self) -> Any: ...

    @property
    def cookies(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class _Binding:
    name: str
    source: str
    alias: str
    type_: Any
    default: Any
    many: bool
    path_first: bool
    quick: Callable[[Any], Any] | None = None
    """Converts the commonest spellings of an int or bool without msgspec (`_SLOW`: ask it)."""


_SLOW = object()
_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_BOUNDS = ("gt", "ge", "lt", "le")
_NOT_QUICK = ("multiple_of", "pattern", "min_length", "max_length", "tz")


def _quick_kind(annotation: Any) -> tuple[str, dict[str, Any]] | None:
    """("bool", {}) or ("int", its bounds) when `_quick_converter` has a shortcut for the type."""
    base: Any = annotation
    metas: tuple[msgspec.Meta, ...] = ()
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        if not all(isinstance(extra, msgspec.Meta) for extra in extras):
            return None
        metas = tuple(extras)
    if base is bool and not metas:
        return "bool", {}
    if base is not int:
        return None
    bounds = _int_bounds(metas)
    return None if bounds is None else ("int", bounds)


def _quick_converter(annotation: Any) -> Callable[[Any], Any] | None:
    """A converter of a query/header/cookie string into an int or a bool giving what
    `convert` gives for the spellings it accepts (`_SLOW` for any other, or a value outside
    the bounds: msgspec then converts it, or words the error); None for other types."""
    kind = _quick_kind(annotation)
    if kind is None:
        return None
    return _quick_bool if kind[0] == "bool" else _quick_int(**kind[1])


_COMPARE = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _quick_lines(b: _Binding, index: int, namespace: dict[str, Any]) -> list[str]:
    """The generated binder's lines setting `value` for a query string `raw`: what `b.quick`
    gives, inline (no call per value)."""
    kind = None if b.many or b.source != "query" else _quick_kind(b.type_)
    if kind is None:
        return [f"        value = _q{index}(raw)" if b.quick is not None else "        value = _SLOW"]
    if kind[0] == "bool":
        return ["        value = _BOOLS.get(raw, _SLOW)"]
    lines = [
        "        value = _SLOW",
        '        if raw.isdigit() and raw.isascii() and len(raw) <= 18 and (raw[0] != "0" or len(raw) == 1):',
        "            value = int(raw)",
    ]
    checks = []
    for name, bound in kind[1].items():
        namespace[f"_{name}{index}"] = bound
        checks.append(f"value {_COMPARE[name]} _{name}{index}")
    if checks:
        lines += [f"            if not ({' and '.join(checks)}):", "                value = _SLOW"]
    return lines


def _quick_bool(raw: Any) -> Any:
    return _BOOLS.get(raw, _SLOW) if type(raw) is str else _SLOW


def _int_bounds(metas: tuple[msgspec.Meta, ...]) -> dict[str, Any] | None:
    """The bounds (gt, ge, lt, le) the Metas set on an int, or None when they constrain it
    otherwise, or bound one side twice: msgspec is then left to judge."""
    bounds: dict[str, Any] = {}
    for meta in metas:
        if any(getattr(meta, name, None) is not None for name in _NOT_QUICK):
            return None
        for name in _BOUNDS:
            value = getattr(meta, name, None)
            if value is not None:
                if name in bounds:
                    return None
                bounds[name] = value
    return bounds


def _quick_int(gt: Any = None, ge: Any = None, lt: Any = None, le: Any = None) -> Callable[[Any], Any]:
    def to_int(raw: Any) -> Any:
        # msgspec takes "5", "-5", "5.0", "1e3" but not "007": only plain digits are quick
        if type(raw) is not str or not (raw.isdigit() and raw.isascii()) or len(raw) > 18:
            return _SLOW
        if raw[0] == "0" and len(raw) > 1:
            return _SLOW
        value = int(raw)
        if (
            (gt is not None and not value > gt)
            or (ge is not None and not value >= ge)
            or (lt is not None and not value < lt)
            or (le is not None and not value <= le)
        ):
            return _SLOW
        return value

    return to_int


def _binding(param: ParamInfo) -> _Binding:
    type_ = _present(param.annotation)
    quick = None if param.many else _quick_converter(type_)
    return _Binding(
        param.name, param.source, param.alias, type_, param.default, param.many, param.path_first, quick
    )


def compile_binder(params: Sequence[ParamInfo]) -> Callable[[ValueSource], dict[str, Any]]:
    """A function reading `params` (none of them the body) from a request or connection.

    Raises RequestValidationError listing every value that is missing or does not fit.
    """
    bindings = tuple(_binding(p) for p in params)
    query_used = any(b.source == "query" for b in bindings)
    path_used = any(b.source == "path" or b.path_first for b in bindings)

    def bind(source: ValueSource) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors: list[ErrorDetail] | None = None
        query = _query_values(source.scope.get("query_string", b"")) if query_used else _NO_QUERY
        path = source.path_params if path_used else _NO_PATH
        for b in bindings:
            kind = "path" if b.path_first and b.name in path else b.source
            raw: Any
            if kind == "query":
                found = query.get(b.alias)
                raw = found if b.many or found is None else found[-1]
            elif kind == "path":
                raw = path.get(b.alias)
            elif kind == "header":
                raw = source.headers.getlist(b.alias) if b.many else source.headers.get(b.alias)
            else:
                raw = source.cookies.get(b.alias)
            if raw is None or (b.many and not raw):
                if b.default is MISSING:
                    errors = errors or []
                    errors.append({"loc": [kind, b.alias], "msg": "field required"})
                else:
                    values[b.name] = b.default
                continue
            if type(raw) is b.type_:  # a plain str, or a path value its converter made already
                values[b.name] = raw
                continue
            value = _SLOW if b.quick is None else b.quick(raw)
            if value is not _SLOW:
                values[b.name] = value
                continue
            try:
                values[b.name] = convert(raw, b.type_)
            except msgspec.ValidationError as exc:
                errors = errors or []
                errors.append(_invalid(b, kind, raw, exc))
        if errors:
            raise RequestValidationError(errors)
        return values

    return bind


def compile_scope_binder(
    params: Sequence[ParamInfo], path_names: Sequence[str] = ()
) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
    """What `compile_binder` reads, read from the ASGI scope alone, in one function generated
    for these parameters, plus the path parameters named in `path_names` passed as they are.

    For the HTTP fast path: no `Request` to build, no loop over bindings, no per-value
    branching on where a value comes from. Same values, same errors, in the same order as
    `compile_binder`. None when a parameter needs more than the scope's path and query
    (headers, cookies, a dependency's path-first value): use `compile_binder` then.
    """
    bindings = tuple(_binding(p) for p in params)
    if any(b.path_first or b.source not in ("query", "path") for b in bindings):
        return None
    many = any(b.many for b in bindings if b.source == "query")
    namespace: dict[str, Any] = {
        "_SLOW": _SLOW,
        "_BOOLS": _BOOLS,
        "_NO_PATH": _NO_PATH,
        "_NO_QUERY": _NO_QUERY,
        "_query": _query_values if many else _query_last,
        "_convert": convert,
        "_ValidationError": msgspec.ValidationError,
        "_invalid": _invalid,
        "RequestValidationError": RequestValidationError,
    }
    lines = ["def bind(scope):"]
    if any(b.source == "query" for b in bindings):
        lines += [
            '    raw_query = scope.get("query_string", b"")',
            "    query = _query(raw_query) if raw_query else _NO_QUERY",
        ]
    if any(b.source == "path" for b in bindings) or path_names:
        lines.append('    path = scope.get("path_params", _NO_PATH)')
    lines += ["    errors = None", "    values = {}"]
    for name in path_names:
        lines.append(f"    values[{name!r}] = path[{name!r}]")
    for index, b in enumerate(bindings):
        namespace[f"_b{index}"] = b
        namespace[f"_t{index}"] = b.type_
        namespace[f"_q{index}"] = b.quick
        namespace[f"_d{index}"] = b.default
        where = "query" if b.source == "query" else "path"
        lines.append(f"    raw = {where}.get({b.alias!r})")
        if b.source == "query" and many and not b.many:
            lines.append("    if raw is not None:")
            lines.append("        raw = raw[-1]")
        lines.append("    if raw is None or not raw:" if b.many else "    if raw is None:")
        if b.default is MISSING:
            lines += [
                "        if errors is None:",
                "            errors = []",
                f'        errors.append({{"loc": [{b.source!r}, {b.alias!r}], "msg": "field required"}})',
            ]
        else:
            lines.append(f"        values[{b.name!r}] = _d{index}")
        lines += [f"    elif type(raw) is _t{index}:", f"        values[{b.name!r}] = raw", "    else:"]
        lines += _quick_lines(b, index, namespace)
        lines += [
            "        if value is _SLOW:",
            "            try:",
            f"                values[{b.name!r}] = _convert(raw, _t{index})",
            "            except _ValidationError as exc:",
            "                if errors is None:",
            "                    errors = []",
            f"                errors.append(_invalid(_b{index}, {b.source!r}, raw, exc))",
            "        else:",
            f"            values[{b.name!r}] = value",
        ]
    lines += ["    if errors:", "        raise RequestValidationError(errors)", "    return values"]
    # generated from the route's own parameter names and aliases (as literals), nothing a request sends
    exec(compile("\n".join(lines), f"<binder of {', '.join(p.name for p in params)}>", "exec"), namespace)
    bind: Callable[[Mapping[str, Any]], dict[str, Any]] = namespace["bind"]
    return bind


def _invalid(b: _Binding, kind: str, raw: Any, exc: msgspec.ValidationError) -> ErrorDetail:
    """The problem with a value msgspec refused: where, and why (with the value when it is text)."""
    loc, message = location(str(exc))
    if not b.many and isinstance(raw, str):
        message += f", got {_shown(raw)}"
    return {"loc": [kind, b.alias, *loc], "msg": message}


_NO_QUERY: dict[str, list[str]] = {}
_NO_PATH: dict[str, Any] = {}


def _query_values(raw: bytes) -> dict[str, list[str]]:
    """The query string's values by name: what `QueryParams.from_string` reads (parse_qsl with
    blank values kept), without unquoting the parts that need none."""
    found: dict[str, list[str]] = {}
    if not raw:
        return found
    for part in raw.decode("latin-1").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name = unquote(name.replace("+", " "))
            value = unquote(value.replace("+", " "))
        values = found.get(name)
        if values is None:
            found[name] = [value]
        else:
            values.append(value)
    return found


def _query_last(raw: bytes) -> dict[str, str]:
    """The last value of each name in the query string: what `_query_values` gives as each
    list's last item, for routes that take no repeated keys."""
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return {name: values[-1] for name, values in _query_values(raw).items()}
    found: dict[str, str] = {}
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            found[name] = value
    return found


def _present(annotation: Any) -> Any:
    """What a value that is there converts into: `T | None` is T (None stands for absent,
    and the text "null" is not None)."""
    bare = _bare(annotation)
    origin = typing.get_origin(bare)
    if origin is typing.Union or origin is _UNION_TYPE:
        members = [arg for arg in typing.get_args(bare) if arg is not _NONE]
        if len(members) == 1:
            return members[0]
        return typing.Union[tuple(members)]  # noqa: UP007 - built from a tuple at run time
    return annotation


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 24 else raw[:24] + "…")
