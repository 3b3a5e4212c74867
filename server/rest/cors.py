"""CORS for browser apps calling the REST API, in the ASGI entry (not middleware: the fast path stays on).

Allowed origins come from ``settings.cors`` (none by default). A preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) from an allowed origin is answered at once, without credentials; a request from
an allowed origin gets ``Access-Control-Allow-Origin`` on its response. Requests without ``Origin`` cost one header
scan.
"""

from __future__ import annotations

from starlette.types import Message, Scope, Send

from server.settings import CorsSettings

_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"


class Cors:
    def __init__(self, settings: CorsSettings) -> None:
        self.any = "*" in settings.allow_origins
        self.origins = frozenset(o.rstrip("/").encode("latin-1") for o in settings.allow_origins if o != "*")
        self.enabled = self.any or bool(self.origins)
        self.allow_headers = ", ".join(settings.allow_headers).encode("latin-1")
        self.expose_headers = ", ".join(settings.expose_headers).encode("latin-1")
        self.max_age = str(settings.max_age_s).encode("latin-1")

    def origin(self, scope: Scope) -> bytes | None:
        """The request's ``Origin`` when it is allowed."""
        for key, value in scope["headers"]:
            if key == b"origin":
                return value if self.any or value in self.origins else None
        return None

    async def preflight(self, scope: Scope, origin: bytes, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", _METHODS),
            (b"access-control-allow-headers", self.allow_headers),
            (b"access-control-max-age", self.max_age),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def wrap(self, origin: bytes, send: Send) -> Send:
        """``send`` adding the CORS response headers for ``origin``."""
        extra = [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", self.expose_headers),
            (b"vary", b"Origin"),
        ]

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"access-control-allow-origin" for k, _ in headers):  # e.g. the SDK's own
                    message["headers"] = [*headers, *extra]
            await send(message)

        return cors_send


def is_preflight(scope: Scope) -> bool:
    if scope["method"] != "OPTIONS":
        return False
    return any(key == b"access-control-request-method" for key, _ in scope["headers"])
