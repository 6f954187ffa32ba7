"""`ApiDocs`: the endpoints serving an app's OpenAPI and AsyncAPI documents and its docs page.

The page and its script and stylesheet ship in this package and are served by the app
itself: no CDN, so it works offline and under the default Content-Security-Policy
(`script-src` falls back to `'self'`; nothing inline but the styles it allows).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from importlib import resources
from typing import Any

import msgspec

from wirehall.apidocs.asyncapi import asyncapi_document
from wirehall.apidocs.openapi import openapi_document
from wirehall.errors import ConfigurationError
from wirehall.http.request import Request
from wirehall.http.response import HTMLResponse, Response
from wirehall.routing import RouteInfo

__all__ = ["ApiDocs"]

Endpoint = Callable[..., Any]
_ASSETS = {"docs.js": "text/javascript", "docs.css": "text/css"}


def _asset(name: str) -> bytes:
    return resources.files("wirehall.apidocs").joinpath("static", name).read_bytes()


def _check_url(option: str, url: str | None) -> None:
    if url is not None and (not url.startswith("/") or "{" in url or url.endswith("/")):
        raise ConfigurationError(
            f"{option}={url!r}; use an absolute path without parameters such as '/docs', or None to turn it off"
        )


class ApiDocs:
    """The routes of the API documents: (path, endpoint, route name) for each URL that is on.

    Documents are built from `routes()` on first request and kept until a route is added.
    """

    def __init__(
        self,
        routes: Callable[[], list[RouteInfo]],
        *,
        title: str,
        version: str,
        openapi_url: str | None,
        asyncapi_url: str | None,
        docs_url: str | None,
    ) -> None:
        for option, url in (
            ("openapi_url", openapi_url),
            ("asyncapi_url", asyncapi_url),
            ("docs_url", docs_url),
        ):
            _check_url(option, url)
        self._routes = routes
        self.title = title
        self.version = version
        self.openapi_url = openapi_url
        self.asyncapi_url = asyncapi_url
        self.docs_url = docs_url
        self._cache: dict[tuple[str, str, int], bytes] = {}
        self.endpoints: list[tuple[str, Endpoint, str]] = []
        if openapi_url is not None:
            self.endpoints.append((openapi_url, self._document_endpoint("openapi"), "openapi"))
        if asyncapi_url is not None:
            self.endpoints.append((asyncapi_url, self._document_endpoint("asyncapi"), "asyncapi"))
        if docs_url is not None:
            self.endpoints.append((docs_url, self._page_endpoint(), "docs"))
            for name, media_type in _ASSETS.items():
                self.endpoints.append(
                    (
                        f"{docs_url}/{name}",
                        _asset_endpoint(name, media_type),
                        f"docs_{name.replace('.', '_')}",
                    )
                )
        self.excluded = frozenset(endpoint for _, endpoint, _ in self.endpoints)

    def exclude(self, endpoint: Endpoint) -> None:
        """Leave `endpoint` out of the documents (it serves an asset, not part of the API)."""
        self.excluded = self.excluded | {endpoint}
        self._cache.clear()

    def document(self, kind: str, root_path: str = "") -> bytes:
        """The encoded OpenAPI ("openapi") or AsyncAPI ("asyncapi") document."""
        routes = self._routes()
        key = (kind, root_path, len(routes))
        found = self._cache.get(key)
        if found is None:
            if kind == "openapi":
                built = openapi_document(
                    routes,
                    title=self.title,
                    version=self.version,
                    exclude=self.excluded,
                    servers=[root_path] if root_path else (),
                )
            else:
                built = asyncapi_document(
                    routes, title=self.title, version=self.version, exclude=self.excluded
                )
            found = self._cache[key] = msgspec.json.encode(built)
        return found

    def _document_endpoint(self, kind: str) -> Endpoint:
        async def document(request: Request) -> Response:
            body = self.document(kind, request.scope.get("root_path", ""))
            return Response(body, media_type="application/json")

        document.__name__ = kind
        document.__qualname__ = f"ApiDocs.{kind}"
        return document

    def _page_endpoint(self) -> Endpoint:
        template = _asset("docs.html").decode()

        async def docs(request: Request) -> Response:
            root = request.scope.get("root_path", "")

            def url(path: str | None) -> str:
                return html.escape(root + path, quote=True) if path is not None else ""

            page = (
                template.replace("{{title}}", html.escape(self.title))
                .replace("{{openapi_url}}", url(self.openapi_url))
                .replace("{{asyncapi_url}}", url(self.asyncapi_url))
                .replace("{{assets}}", url(self.docs_url))
            )
            return HTMLResponse(page)

        docs.__qualname__ = "ApiDocs.docs"
        return docs


def _asset_endpoint(name: str, media_type: str) -> Endpoint:
    body = _asset(name)

    async def asset() -> Response:
        return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})

    asset.__name__ = name.replace(".", "_")
    asset.__qualname__ = f"ApiDocs.{asset.__name__}"
    return asset
