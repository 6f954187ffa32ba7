"""Same-site unsafe requests: `@json_only` and `@same_site` on JSON API endpoints.

A page on any site can make a visitor's browser send a "simple" cross-site request, a
POST with `Content-Type: text/plain` or a form type, with the visitor's cookies and
without asking first (no CORS preflight). Requiring `application/json` forces such a
request through a preflight that the browser refuses unless CORS allows it, and
checking `Origin` refuses it outright, with the same rule as the WebSocket origin check.

`json_only` and `same_site` mark an endpoint, a controller class or a controller method
(like `requires_auth`); the app's HTTP runner asks a `SameSiteGuard` about every
request to a marked endpoint and answers its `Refusal` as a JSON error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from wirehall.errors import ConfigurationError
from wirehall.types import Scope

__all__ = [
    "SAME_SITE_ATTRIBUTE",
    "UNSAFE_METHODS",
    "OriginCheck",
    "Refusal",
    "RequestRule",
    "SameSiteGuard",
    "is_json_content_type",
    "json_only",
    "same_site",
]

SAME_SITE_ATTRIBUTE = "__wirehall_same_site__"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

T = TypeVar("T")

OriginCheck = Callable[[str, Scope], bool]
"""Whether a request in the scope, with this `Origin` header value, comes from an allowed site."""


@dataclass(frozen=True, slots=True)
class RequestRule:
    """What `json_only` and `same_site` recorded on an endpoint."""

    json_body: bool = False
    same_origin: bool = False

    def merged(self, other: RequestRule) -> RequestRule:
        """Both rules at once."""
        return RequestRule(self.json_body or other.json_body, self.same_origin or other.same_origin)


class Refusal(NamedTuple):
    """The HTTP status and the `{"error": ...}` detail a refused request gets."""

    status: int
    detail: str


def json_only(target: T) -> T:
    """Require `Content-Type: application/json` on POST, PUT and PATCH (and a DELETE with a body).

    Anything else (`text/plain`, form types, no type at all) gets 415. Parameters such
    as `; charset=utf-8` are fine, and so are `application/*+json` types. On a
    controller class it covers every method; safe methods (GET, HEAD, OPTIONS) are
    never checked.
    """
    return _mark(target, RequestRule(json_body=True), "json_only")


def same_site(target: T) -> T:
    """Refuse (403) a POST, PUT, PATCH or DELETE whose `Origin` header names another site.

    The rule is the WebSocket origin check's: the app's own origin and the app's
    `allowed_origins` pass; `Origin: null` does not. A request without `Origin` passes
    (browsers send one on every cross-site unsafe request; scripts and servers often
    send none). On a controller class it covers every method.
    """
    return _mark(target, RequestRule(same_origin=True), "same_site")


def _mark(target: T, rule: RequestRule, name: str) -> T:
    existing: RequestRule | None = getattr(target, SAME_SITE_ATTRIBUTE, None)
    try:
        setattr(target, SAME_SITE_ATTRIBUTE, rule if existing is None else existing.merged(rule))
    except (AttributeError, TypeError) as exc:
        raise ConfigurationError(
            f"{name} cannot mark {target!r}; use it on a function, a controller class or a controller method"
        ) from exc
    return target


def is_json_content_type(value: bytes | None) -> bool:
    """Whether a `Content-Type` value is `application/json` or `application/*+json`."""
    if value is None:
        return False
    media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class SameSiteGuard:
    """Checks a request against the `json_only` / `same_site` marks of its endpoint.

    `origin_allowed` is the app's origin rule (`WebSocketOriginMiddleware.allows`).
    """

    __slots__ = ("origin_allowed",)

    def __init__(self, origin_allowed: OriginCheck) -> None:
        self.origin_allowed = origin_allowed

    def __call__(self, targets: Iterable[object], scope: Scope) -> Refusal | None:
        """None when the request may run; else why not. `targets`: the endpoint (class, method)."""
        method = scope["method"]
        if method not in UNSAFE_METHODS:
            return None
        rule: RequestRule | None = None
        for target in targets:
            found: RequestRule | None = getattr(target, SAME_SITE_ATTRIBUTE, None)
            if found is not None:
                rule = found if rule is None else rule.merged(found)
        if rule is None:
            return None
        origin: bytes | None = None
        content_type: bytes | None = None
        has_body = method in _BODY_METHODS
        for key, value in scope.get("headers", ()):
            if key == b"origin":
                origin = value
            elif key == b"content-type":
                content_type = value
            elif key == b"transfer-encoding" or (
                key == b"content-length" and value.strip() not in (b"0", b"")
            ):
                has_body = True
        if rule.same_origin and origin is not None:
            text = origin.decode("latin-1")
            if not self.origin_allowed(text, scope):
                return Refusal(
                    403,
                    f"cross-site request refused: origin {_shown(text)} is not this site; "
                    "send it from this site's own pages",
                )
        if rule.json_body and has_body and not is_json_content_type(content_type):
            got = (
                "no Content-Type"
                if content_type is None
                else f"Content-Type {_shown(content_type.decode('latin-1'))}"
            )
            return Refusal(415, f"this endpoint takes JSON: send Content-Type: application/json (got {got})")
        return None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")
