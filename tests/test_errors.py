from __future__ import annotations

import pytest

from wirehall import errors
from wirehall.errors import (
    BackplaneError,
    ConfigurationError,
    HTTPError,
    MissingDependencyError,
    WebSocketDisconnectError,
    WebSocketError,
    WebSocketStateError,
    WirehallError,
)


@pytest.mark.parametrize(
    "cls",
    [
        BackplaneError,
        ConfigurationError,
        HTTPError,
        MissingDependencyError,
        WebSocketDisconnectError,
        WebSocketError,
        WebSocketStateError,
    ],
)
def test_every_error_is_a_wirehall_error(cls: type[Exception]) -> None:
    assert issubclass(cls, WirehallError)


def test_all_lists_every_error_class() -> None:
    public = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
    }
    assert set(errors.__all__) == public
    assert errors.__all__ == sorted(errors.__all__)


def test_missing_dependency_is_an_import_and_configuration_error_naming_the_extra() -> None:
    error = MissingDependencyError("redis", extra="redis")
    assert isinstance(error, ImportError)
    assert isinstance(error, ConfigurationError)
    assert (error.package, error.extra) == ("redis", "redis")
    assert "pip install 'wirehall[redis]'" in str(error)
    with pytest.raises(ImportError):
        raise error


def test_http_error_carries_status_detail_and_headers() -> None:
    headers = {"Retry-After": "5"}
    error = HTTPError(503, "try later", headers=headers)
    headers["Retry-After"] = "changed"
    assert error.status == 503
    assert error.detail == "try later"
    assert error.headers == {"Retry-After": "5"}
    assert str(error) == "503: try later"


@pytest.mark.parametrize(
    ("status", "detail"), [(404, "Not Found"), (422, "Unprocessable Entity"), (599, "error")]
)
def test_http_error_default_detail_is_the_reason_phrase(status: int, detail: str) -> None:
    error = HTTPError(status)
    assert error.detail == detail
    assert error.headers == {}


def test_websocket_errors_carry_code_and_reason() -> None:
    error = WebSocketError(4001, "bad room")
    assert (error.code, error.reason) == (4001, "bad room")
    assert str(error) == "4001: bad room"
    assert str(WebSocketError(1008)) == "1008"
    gone = WebSocketDisconnectError(1001, "going away")
    assert (gone.code, gone.reason) == (1001, "going away")
    assert "1001" in str(gone)
    assert "going away" in str(gone)
    assert WebSocketDisconnectError().code == 1000
