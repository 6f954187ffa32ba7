"""`wirehall.__all__` is the public API: exactly the public names the package exposes, sorted."""

from __future__ import annotations

import importlib
import types

import wirehall


def _public_names() -> set[str]:
    return {
        name
        for name, value in vars(wirehall).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_matches_the_public_names() -> None:
    assert set(wirehall.__all__) == _public_names()


def _isort_key(name: str) -> tuple[int, str]:
    # the order ruff's RUF022 keeps `__all__` in: CONSTANTS, then CamelCase, then the rest
    if name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_without_duplicates() -> None:
    assert list(wirehall.__all__) == sorted(wirehall.__all__, key=_isort_key)
    assert len(set(wirehall.__all__)) == len(wirehall.__all__)


def test_every_name_in_all_is_importable() -> None:
    module = importlib.import_module("wirehall")
    for name in wirehall.__all__:
        assert getattr(module, name) is not None, name


def test_the_names_an_app_author_needs_are_there() -> None:
    needed = {
        "ConfigurationError",
        "HTTPController",
        "HTTPError",
        "Request",
        "Response",
        "WebSocketController",
        "WebSocketService",
        "Wirehall",
        "WirehallError",
    }
    assert needed <= set(wirehall.__all__)


def test_the_testing_helpers_are_exported_by_their_package() -> None:
    testing = importlib.import_module("wirehall.testing")
    public = {name for name, value in vars(testing).items() if not name.startswith("_")}
    public = {name for name in public if not isinstance(getattr(testing, name), types.ModuleType)}
    assert set(testing.__all__) == public
    # the async client for `async def` tests, the synchronous one for plain `def` tests
    assert {"SyncTestClient", "SyncWebSocketSession", "TestClient", "WebSocketTestSession"} <= public
