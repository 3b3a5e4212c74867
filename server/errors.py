"""Errors of the serving core. No transport imports: each door maps them once
(``server/rest/errors.py`` to HTTP, ``tools/errors.py`` to MCP).

ServingError
 ├── ModelNotFound       unknown model, version or alias                      (REST 404, RESOURCE_DOES_NOT_EXIST)
 ├── ModelNotReady       known but still loading or failed to load            (REST 503, TEMPORARILY_UNAVAILABLE)
 ├── InvalidInput        the request does not match the signature             (REST 400, BAD_REQUEST)
 │    ├── PayloadTooLarge  body or row count over the configured limit        (REST 413)
 │    └── UnsupportedMediaType  content type other than JSON or CSV         (REST 415)
 ├── Overloaded          the model's queue is full                            (REST 503 + Retry-After)
 ├── InferenceTimeout    the request waited longer than its timeout           (REST 504)
 ├── ServerStopping      the batcher refuses new work while draining          (REST 503)
 ├── InferenceFailed     the model raised or returned a malformed result      (REST 500 with request id)
 ├── Conflict            the resource is busy (e.g. an endpoint update in progress) (REST 409, RESOURCE_CONFLICT)
 │    └── AlreadyExists  a resource with that name exists                     (REST 409, RESOURCE_ALREADY_EXISTS)
 ├── Unauthenticated     missing or invalid credentials or signature          (REST 401 + WWW-Authenticate)
 ├── PermissionDenied    the caller may not do this (e.g. webhooks disabled)   (REST 403)
 └── RateLimited         over the endpoint's or model's rate limit            (REST 429 + Retry-After,
                                                                               REQUEST_LIMIT_EXCEEDED)
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error the serving core raises on purpose."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ModelNotFound(ServingError):
    error_code = "RESOURCE_DOES_NOT_EXIST"


class ModelNotReady(ServingError):
    error_code = "TEMPORARILY_UNAVAILABLE"


class InvalidInput(ServingError):
    error_code = "BAD_REQUEST"


class PayloadTooLarge(InvalidInput):
    error_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(InvalidInput):
    error_code = "UNSUPPORTED_MEDIA_TYPE"


class Overloaded(ServingError):
    error_code = "TEMPORARILY_UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InferenceTimeout(ServingError):
    error_code = "DEADLINE_EXCEEDED"


class ServerStopping(ServingError):
    error_code = "TEMPORARILY_UNAVAILABLE"


class InferenceFailed(ServingError):
    error_code = "INTERNAL_ERROR"


class Conflict(ServingError):
    error_code = "RESOURCE_CONFLICT"


class AlreadyExists(Conflict):
    error_code = "RESOURCE_ALREADY_EXISTS"


class Unauthenticated(ServingError):
    error_code = "UNAUTHENTICATED"


class PermissionDenied(ServingError):
    error_code = "PERMISSION_DENIED"


class RateLimited(ServingError):
    error_code = "REQUEST_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
