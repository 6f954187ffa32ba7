"""WebSocket close codes (RFC 6455 section 7.4 and the IANA registry) by name."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "refusal_close_code"]


class CloseCode(IntEnum):
    """Close codes by name, so that no code says `1013`."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


def refusal_close_code(status: int) -> int:
    """The application close code (4000-4999) that stands for refusing with HTTP `status`:
    4000 + `status`, so 403 is 4403 and 429 is 4429.

    Raises:
        ValueError: `status` is not a 4xx or 5xx status.
    """
    if not 400 <= status <= 599:
        raise ValueError(f"a refusal's status is 400-599, not {status!r}")
    return 4000 + status
