"""How `wirehall run` sets up uvicorn: head-limited HTTP protocols and log redaction."""

from wirehall.server.protocols import HeadLimits, check_uvicorn, http_protocol
from wirehall.server.redaction import DEFAULT_REDACTED_PARAMS, QueryRedactionFilter

__all__ = ["DEFAULT_REDACTED_PARAMS", "HeadLimits", "QueryRedactionFilter", "check_uvicorn", "http_protocol"]
