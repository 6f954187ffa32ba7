"""MkDocs hooks of the guide: the CLI reference is generated from the `wirehall` command itself.

A page that holds the line `<!-- wirehall-cli: run -->` gets, in its place, a table of every
option of `wirehall run` as `wirehall run --help` shows it (click's own help records), so
the reference cannot drift from the command. `tests/guide/test_configuration.py` checks it.
"""

from __future__ import annotations

import re
from typing import Any

import click

from wirehall.cli import main

__all__ = ["cli_reference", "on_page_markdown"]

_MARKER = re.compile(r"^<!-- wirehall-cli: (?P<command>[a-z]+) -->$", re.MULTILINE)


def _cell(text: str) -> str:
    text = " ".join(text.split())
    for special in ("\\", "|", "*", "_", "["):  # plain text in a table cell
        text = text.replace(special, "\\" + special)
    return text


def _code(text: str) -> str:
    return " ".join(text.split())  # a code span: a bar in it does not split the cell


def cli_reference(command_name: str) -> str:
    """A Markdown table of the options of `wirehall COMMAND`, from click's help records."""
    command = main.commands.get(command_name) if isinstance(main, click.Group) else None
    if command is None:
        raise ValueError(f"wirehall has no command {command_name!r}")
    parent = click.Context(main, info_name="wirehall")
    context = click.Context(command, info_name=command_name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(context))
    rows = ["| option | what it does |", "|---|---|"]
    for param in command.get_params(context):
        record = param.get_help_record(context) if isinstance(param, click.Option) else None
        if record is None:  # an argument (shown in the usage line)
            continue
        names, help_text = record
        rows.append(f"| `{_code(names)}` | {_cell(help_text)} |")
    lines = [f"`wirehall {command_name} {usage}`: {_cell(command.help or '')}", "", *rows]
    return "\n".join(lines)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each CLI marker with the command's generated option table."""
    return _MARKER.sub(lambda match: cli_reference(match.group("command")), markdown)
