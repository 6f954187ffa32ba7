"""Every code block of the guide is run or allowed (tests/guide/pages.py says which), and every
Python example runs, on both WebSocket paths: the guide cannot show code that does not work."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import shutil
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _pytest.assertion.rewrite import rewrite_asserts  # what pytest does to test modules

from tests.guide.pages import (
    CONFIG_LANGUAGES,
    EXAMPLES,
    GUIDE,
    INCLUDED_LANGUAGES,
    Block,
    blocks_of,
    guide_pages,
)

PAGES = guide_pages()


def page_id(page: Path) -> str:
    return page.relative_to(GUIDE).with_suffix("").as_posix()


def problem_of(block: Block) -> str | None:
    """Why `block` may not stand in the guide, or None."""
    page = block.page.relative_to(GUIDE) if block.page.is_relative_to(GUIDE) else block.page
    where = f"{page}:{block.line}"
    if block.language == "python" or block.language in CONFIG_LANGUAGES:
        return None
    if block.language in INCLUDED_LANGUAGES:
        if block.snippet is not None and block.snippet.is_relative_to(EXAMPLES):
            return None
        return f"{where}: a {block.language} block must be a file of guide/examples/ included with --8<--"
    if not block.language:
        return f"{where}: a code block without a language; say python (run), or one of {sorted(CONFIG_LANGUAGES)}"
    return f"{where}: {block.language!r} blocks are neither run nor allowed ({sorted(CONFIG_LANGUAGES)})"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_block_is_run_or_allowed(page: Path) -> None:
    problems = [problem for block in blocks_of(page) if (problem := problem_of(block)) is not None]
    assert not problems, "\n".join(problems)


def test_the_rule_catches_an_unrun_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```\nprint(1)\n```\n\n```js\nalert(1)\n```\n\n```python\nx = 1\n```\n")
    first, second, third = (problem_of(block) for block in blocks_of(page))
    assert "without a language" in str(first)
    assert "'js'" in str(second)
    assert third is None


def compile_block(source: str, origin: Path) -> types.CodeType:
    """Compile a block with pytest's assertion rewriting, so a failing example says why."""
    tree = ast.parse(source, str(origin))
    rewrite_asserts(tree, source.encode(), str(origin))
    return compile(tree, str(origin), "exec")


def fixtures_of(module: types.ModuleType, test: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The functions behind the `@pytest.fixture`s of the page that `test` asks for by name."""
    found = []
    for name in inspect.signature(test).parameters:
        fixture = getattr(module, name, None)
        wrapped = getattr(fixture, "__wrapped__", None)
        if wrapped is None:
            raise LookupError(f"{test.__name__} asks for {name!r}, which is no fixture of the page")
        found.append(wrapped)
    return found


def call_test(module: types.ModuleType, test: Callable[..., Any]) -> None:
    """Call a test of the page as pytest would: with the page's fixtures (plain or generator
    ones for a plain test; async ones too for an `async def` test, on one event loop)."""
    fixtures = fixtures_of(module, test)
    if not inspect.iscoroutinefunction(test):
        with contextlib.ExitStack() as stack:
            values = []
            for fixture in fixtures:
                made = fixture()
                if inspect.isgenerator(made):
                    values.append(stack.enter_context(contextlib.contextmanager(lambda made=made: made)()))
                else:
                    values.append(made)
            test(*values)
        return

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            values = []
            for fixture in fixtures:
                made = fixture()
                if inspect.isasyncgen(made):
                    values.append(
                        await stack.enter_async_context(
                            contextlib.asynccontextmanager(lambda made=made: made)()
                        )
                    )
                elif inspect.isgenerator(made):
                    values.append(stack.enter_context(contextlib.contextmanager(lambda made=made: made)()))
                else:
                    values.append(await made if inspect.isawaitable(made) else made)
            await test(*values)

    asyncio.run(run())


def run_page(page: Path, workdir: Path) -> list[str]:
    """Run the page's Python blocks in order in one fresh module; after each block, the
    `test_*` functions it defined (so a test sees the names as they were then). Their names."""
    examples = EXAMPLES / page.relative_to(GUIDE).with_suffix("")
    if examples.is_dir():
        shutil.copytree(examples, workdir, dirs_exist_ok=True)
    name = "guide_" + page_id(page).replace("/", "_").replace("-", "_")
    module = types.ModuleType(name)
    module.__file__ = str(workdir / f"{name}.py")
    sys.modules[name] = module
    ran: list[str] = []
    try:
        for block in blocks_of(page):
            if block.language != "python":
                continue
            before = {key: value for key, value in vars(module).items() if key.startswith("test_")}
            # line numbers of a failure point into the page (or the included file)
            origin = block.snippet or page
            padding = "" if block.snippet else "\n" * block.line
            exec(compile_block(padding + block.source, origin), module.__dict__)
            for attribute, value in list(vars(module).items()):
                if attribute.startswith("test_") and callable(value) and before.get(attribute) is not value:
                    call_test(module, value)
                    ran.append(f"{page.name}:{block.line}:{attribute}")
        return ran
    finally:
        del sys.modules[name]
        for loaded, imported in list(sys.modules.items()):  # the example's own modules (`app`)
            source = getattr(imported, "__file__", None)
            if source is not None and Path(source).is_relative_to(workdir):
                del sys.modules[loaded]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b.language == "python" for b in blocks_of(p))], ids=page_id
)
def test_page_examples_run(
    page: Path, websocket_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_page(page, tmp_path)
