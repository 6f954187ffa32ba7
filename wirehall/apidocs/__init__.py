"""The app's API documents: OpenAPI 3.1 for HTTP routes, AsyncAPI 3.0 for WebSocket routes,
and a docs page rendering both, served by the app itself."""

from wirehall.apidocs.asyncapi import ASYNCAPI_VERSION, asyncapi_document
from wirehall.apidocs.openapi import OPENAPI_VERSION, VALIDATION_ERROR_SCHEMA, openapi_document
from wirehall.apidocs.pages import ApiDocs

__all__ = [
    "ASYNCAPI_VERSION",
    "OPENAPI_VERSION",
    "VALIDATION_ERROR_SCHEMA",
    "ApiDocs",
    "asyncapi_document",
    "openapi_document",
]
