from __future__ import annotations

import logging
from pathlib import Path

import jinja2
import pytest

from wirehall import HTTPController, Response, Wirehall
from wirehall.http.templates import Templates
from wirehall.testing.client import TestClient

EVIL = "<script>alert('x')</script>"


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    (tmp_path / "hello.html").write_text("<p>Hello {{ name }}</p>")
    (tmp_path / "trusted.html").write_text("<div>{{ snippet | safe }}</div>")
    (tmp_path / "base.html").write_text("<main>{% block body %}{% endblock %}</main>")
    (tmp_path / "child.txt").write_text('{% extends "base.html" %}{% block body %}{{ name }}{% endblock %}')
    (tmp_path / "page.html").write_text("<a href='{{ request.url_for(\"page\") }}'>{{ title }}</a>")
    return tmp_path


def test_variables_are_autoescaped(template_dir: Path) -> None:
    html = Templates(template_dir).render("hello.html", {"name": EVIL})
    assert "<script>" not in html
    assert html == "<p>Hello &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</p>"


def test_autoescaping_covers_every_template_name(template_dir: Path) -> None:
    html = Templates(template_dir).render("child.txt", {"name": EVIL})
    assert "<script>" not in html
    assert html.startswith("<main>&lt;script&gt;")


def test_safe_marks_trusted_markup(template_dir: Path) -> None:
    assert Templates(template_dir).render("trusted.html", {"snippet": "<b>ok</b>"}) == "<div><b>ok</b></div>"


def test_response_is_html(template_dir: Path) -> None:
    response = Templates(template_dir).response("hello.html", {"name": "ann"}, status=201)
    assert response.status == 201
    assert response.body == b"<p>Hello ann</p>"
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_missing_template_is_an_error(template_dir: Path) -> None:
    with pytest.raises(jinja2.TemplateNotFound):
        Templates(template_dir).render("nope.html")


def test_a_missing_template_directory_is_refused_when_configured(tmp_path: Path) -> None:
    from wirehall.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no-templates-here"):
        Templates(tmp_path / "no-templates-here")


def test_options_reach_jinja(template_dir: Path) -> None:
    templates = Templates(template_dir, autoescape=False, undefined=jinja2.StrictUndefined)
    assert templates.render("hello.html", {"name": "<b>"}) == "<p>Hello <b></p>"
    with pytest.raises(jinja2.UndefinedError):
        templates.render("hello.html")


async def test_controller_render_through_the_app(template_dir: Path) -> None:
    app = Wirehall(backplane="memory://", templates=template_dir)

    @app.route("/hello/{name}")
    class Hello(HTTPController):
        async def get(self, name: str) -> Response:
            return self.render("hello.html", name=name)

    @app.route("/page", name="page")
    class Page(HTTPController):
        async def get(self) -> Response:
            return self.render("page.html", status=202, title=EVIL)

    async with TestClient(app) as client:
        hello = await client.get("/hello/%3Cscript%3E")
        page = await client.get("/page")
    assert hello.text == "<p>Hello &lt;script&gt;</p>"
    assert hello.headers["content-type"] == "text/html; charset=utf-8"
    assert "content-security-policy" in hello.headers
    assert page.status_code == 202
    assert page.text.startswith("<a href='http://testserver/page'>&lt;script&gt;")


async def test_render_without_templates_is_a_500_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    app = Wirehall(backplane="memory://")

    @app.route("/x")
    class NoTemplates(HTTPController):
        async def get(self) -> Response:
            return self.render("hello.html")

    with caplog.at_level(logging.ERROR):
        async with TestClient(app) as client:
            response = await client.get("/x")
    assert response.status_code == 500
    assert "Wirehall(templates=" in caplog.text
