"""The configuration reference names every setting, environment variable and flag, and the site's
navigation every page: adding one without documenting it fails here."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import click
import pytest
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not installed

from tests.guide.pages import DESIGN_DIR, GUIDE, ROOT, guide_pages
from wirehall import WebSocketController, WebSocketService, Wirehall
from wirehall.cli import main

REFERENCE = GUIDE / "configuration.md"
PACKAGE = ROOT / "wirehall"


def hooks() -> ModuleType:
    """The guide's MkDocs hooks (guide/_hooks.py), which generate the CLI tables."""
    spec = importlib.util.spec_from_file_location("guide_hooks", GUIDE / "_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def environment_variables() -> set[str]:
    """Every WIREHALL_* / PROMETHEUS_* name the package's code spells out."""
    found: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        found.update(re.findall(r"[\"']((?:WIREHALL|PROMETHEUS)_[A-Z_]+)[\"']", source.read_text()))
    return found


def test_every_environment_variable_is_documented() -> None:
    names = environment_variables()
    assert "WIREHALL_BACKPLANE" in names  # the scan works
    missing = sorted(name for name in names if f"`{name}`" not in reference())
    assert not missing, f"configuration.md does not name {missing}"


@pytest.mark.parametrize(
    "target", [Wirehall.__init__, WebSocketService.__init__], ids=["Wirehall", "WebSocketService"]
)
def test_every_constructor_argument_is_documented(target: object) -> None:
    parameters = [name for name in inspect.signature(target).parameters if name != "self"]  # type: ignore[arg-type]
    missing = [name for name in parameters if f"`{name}`" not in reference()]
    assert not missing, f"configuration.md does not name {missing}"


def test_every_controller_option_is_documented() -> None:
    options = ["receives", "message_type", "sends", "max_message_size", "rate_limit"]
    assert set(options) <= set(WebSocketController.__annotations__)  # the class options
    undocumented = [name for name in WebSocketController.__annotations__ if f"`{name}`" not in reference()]
    assert not undocumented, f"configuration.md does not name {undocumented}"


def test_every_command_and_flag_is_in_the_generated_tables() -> None:
    assert isinstance(main, click.Group)
    generate = hooks().cli_reference
    for name, command in main.commands.items():
        assert f"<!-- wirehall-cli: {name} -->" in reference(), (
            f"configuration.md has no table of `wirehall {name}`"
        )
        table = generate(name)
        for param in command.params:
            for flag in (*param.opts, *param.secondary_opts):
                if flag.startswith("-"):
                    assert flag in table, f"{flag} of `wirehall {name}` is not in its generated table"


def test_the_marker_becomes_the_table() -> None:
    rendered = hooks().on_page_markdown("before\n<!-- wirehall-cli: run -->\nafter")
    assert "| `--log-format [text|json]` |" in rendered
    assert "<!--" not in rendered


def test_the_navigation_lists_every_page_and_design_note() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def listed(entries: list[object]) -> set[str]:
        found: set[str] = set()
        for entry in entries:
            if isinstance(entry, dict):
                for value in entry.values():
                    found |= listed(value) if isinstance(value, list) else {str(value)}
            else:
                found.add(str(entry))
        return found

    in_nav = listed(config["nav"])
    pages = {page.relative_to(GUIDE).as_posix() for page in guide_pages()}
    notes = {f"design/{note.name}" for note in (ROOT / "docs").glob("*.md")}
    assert DESIGN_DIR.resolve() == (ROOT / "docs").resolve()
    assert pages | notes <= in_nav, f"not in mkdocs.yml's nav: {sorted((pages | notes) - in_nav)}"
    assert in_nav <= pages | notes, f"in the nav but missing: {sorted(in_nav - pages - notes)}"


def test_the_readme_links_to_the_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Documentation" in readme
    assert "make docs" in readme
    assert Path("guide/tutorial.md").as_posix() in readme


def test_the_browser_client_page_covers_the_module() -> None:
    script = (PACKAGE / "static" / "wirehall.js").read_text()
    page = (GUIDE / "browser-client.md").read_text()
    exports = re.findall(r"^export (?:async )?(?:function|class) (\w+)", script, re.MULTILINE)
    options = re.findall(
        r"^\s+\*\s+(\w+)(?:\(.*?\))?:", script, re.MULTILINE
    )  # the constructor's doc comment
    events = re.findall(r'new CustomEvent\("(\w+)"', script)
    assert "WirehallSocket" in exports
    assert {"resume", "backoff", "ping", "isFinal"} <= set(options)
    assert {"state", "message", "close"} <= set(events)
    missing = [name for name in {*exports, *options, *events} if f"`{name}" not in page]
    assert not missing, f"browser-client.md does not name {sorted(missing)}"
