"""Security middleware and helpers: sessions, authentication, CSRF, CORS, hosts, headers, limits.

Every middleware is plain ASGI (`Middleware(app, **options)`) and treats HTTP requests
and WebSocket handshakes alike where that makes sense.
"""

from wirehall.security.access import AuthRequirement, access_denied, requires_auth
from wirehall.security.auth import AuthenticationMiddleware, bearer_token, session_user
from wirehall.security.connection_limit import ConnectionLimitMiddleware
from wirehall.security.cors import CORSMiddleware
from wirehall.security.csrf import CSRFMiddleware
from wirehall.security.headers import DEFAULT_CONTENT_SECURITY_POLICY, SecurityHeadersMiddleware
from wirehall.security.hosts import TrustedHostMiddleware
from wirehall.security.origin import WebSocketOriginMiddleware
from wirehall.security.passwords import hash_password, needs_rehash, verify_password
from wirehall.security.same_site import json_only, same_site
from wirehall.security.sessions import SessionMiddleware

__all__ = [
    "DEFAULT_CONTENT_SECURITY_POLICY",
    "AuthRequirement",
    "AuthenticationMiddleware",
    "CORSMiddleware",
    "CSRFMiddleware",
    "ConnectionLimitMiddleware",
    "SecurityHeadersMiddleware",
    "SessionMiddleware",
    "TrustedHostMiddleware",
    "WebSocketOriginMiddleware",
    "access_denied",
    "bearer_token",
    "hash_password",
    "json_only",
    "needs_rehash",
    "requires_auth",
    "same_site",
    "session_user",
    "verify_password",
]
