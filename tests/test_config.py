from __future__ import annotations

import pytest

from wirehall.config import Settings
from wirehall.errors import ConfigurationError


def test_defaults_when_the_environment_says_nothing() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(backplane="memory://", debug=False)


def test_backplane_is_read_and_stripped() -> None:
    assert Settings.from_env({"WIREHALL_BACKPLANE": " redis://h:6379/1 "}).backplane == "redis://h:6379/1"
    assert Settings.from_env({"WIREHALL_BACKPLANE": "   "}).backplane == "memory://"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " On "])
def test_debug_flag_on(value: str) -> None:
    assert Settings.from_env({"WIREHALL_DEBUG": value}).debug is True


@pytest.mark.parametrize("value", ["", "0", "false", "No", "off"])
def test_debug_flag_off(value: str) -> None:
    assert Settings.from_env({"WIREHALL_DEBUG": value}).debug is False


def test_bad_debug_flag_names_the_variable_and_the_value() -> None:
    with pytest.raises(ConfigurationError, match=r"WIREHALL_DEBUG='maybe'.*1/0"):
        Settings.from_env({"WIREHALL_DEBUG": "maybe"})


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHALL_DEBUG", "1")
    monkeypatch.setenv("WIREHALL_BACKPLANE", "memory://")
    assert Settings.from_env() == Settings(backplane="memory://", debug=True)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.debug = True  # type: ignore[misc]
