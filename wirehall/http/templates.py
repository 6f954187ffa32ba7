"""Jinja2 templates, autoescaped."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jinja2

from wirehall.errors import ConfigurationError
from wirehall.http.response import HTMLResponse

__all__ = ["Templates"]


class Templates:
    """Renders Jinja2 templates from a directory, with HTML autoescaping on."""

    def __init__(self, directory: str | os.PathLike[str], **options: Any) -> None:
        if not os.path.isdir(directory):
            raise ConfigurationError(
                f"template directory {os.fspath(directory)!r} does not exist or is not a directory"
            )
        options.setdefault("autoescape", True)
        self.environment = jinja2.Environment(loader=jinja2.FileSystemLoader(os.fspath(directory)), **options)

    def render(self, name: str, context: Mapping[str, Any] | None = None) -> str:
        """The template `name` rendered to a string."""
        return self.environment.get_template(name).render(dict(context or {}))

    def response(
        self, name: str, context: Mapping[str, Any] | None = None, status: int = 200
    ) -> HTMLResponse:
        """The template `name` rendered as an HTML response."""
        return HTMLResponse(self.render(name, context), status)
