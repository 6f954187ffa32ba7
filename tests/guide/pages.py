"""The guide's pages and their code blocks, as the tests see them.

Every fenced block of a guide page is one of:

- `python`: executed. A page's Python blocks run in order in one module of their own (in a
  fresh working directory holding a copy of `guide/examples/<page>/`, if there is one),
  then every `test_*` function they defined is called (an `async def` one on its own loop);
- shell or configuration text (`CONFIG_LANGUAGES`): shown, not run;
- an `html` / `javascript` file the page includes whole from `guide/examples/` with a
  snippet (`--8<--`, `tutorial/static/chat.js`, `--8<--` on three lines): the tests that use the example (the
  tutorial's browser test, the templates the HTTP page renders) exercise it.

Anything else (no language, another language, HTML or JavaScript written in the page)
fails `test_every_block_is_run_or_allowed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONFIG_LANGUAGES",
    "DESIGN_DIR",
    "EXAMPLES",
    "GUIDE",
    "INCLUDED_LANGUAGES",
    "ROOT",
    "Block",
    "blocks_of",
    "guide_pages",
]

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "guide"
EXAMPLES = GUIDE / "examples"
DESIGN_DIR = GUIDE / "design"  # a link to docs/: the design notes, included as they are
SNIPPET_BASES = (EXAMPLES, ROOT)  # mkdocs.yml's pymdownx.snippets base_path, in order

CONFIG_LANGUAGES = frozenset({"sh", "text", "toml", "ini", "nginx", "json"})
INCLUDED_LANGUAGES = frozenset({"html", "javascript", "jinja"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_SNIPPET = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    source: str  # with a snippet resolved to the file's text
    snippet: Path | None  # the included file, when the block is one snippet line


def guide_pages() -> list[Path]:
    """The guide's own pages (the design notes under design/ are docs/, included as they are)."""
    return sorted(path for path in GUIDE.rglob("*.md") if not path.is_relative_to(DESIGN_DIR))


def _resolve_snippet(name: str) -> Path:
    for base in SNIPPET_BASES:
        candidate = base / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"snippet {name!r} is in none of {[str(b) for b in SNIPPET_BASES]}")


def _included(body: list[str]) -> str | None:
    """The file a block includes whole: `--8<-- "name"`, or the block form that ruff's
    Markdown formatting leaves alone (`--8<--`, the name, `--8<--` on three lines)."""
    lines = [line.strip() for line in body]
    if len(lines) == 1 and (match := _SNIPPET.match(lines[0])) is not None:
        return match["path"]
    if len(lines) == 3 and lines[0] == lines[2] == "--8<--" and lines[1]:
        return lines[1].strip("\"'")
    return None


def blocks_of(page: Path) -> list[Block]:
    """The fenced code blocks of `page`, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            line = lines[end]
            if line.strip().startswith(fence[0] * len(fence)) and line.strip().strip(fence[0]) == "":
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            end += 1
        else:
            raise ValueError(f"{page}:{index + 1}: a code block is never closed")
        snippet: Path | None = None
        source = "\n".join(body) + "\n"
        included = _included(body)
        if included is not None:
            snippet = _resolve_snippet(included)
            source = snippet.read_text(encoding="utf-8")
        blocks.append(Block(page, index + 1, language, source, snippet))
        index = end + 1
    return blocks
