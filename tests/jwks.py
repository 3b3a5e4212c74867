"""An OAuth issuer for tests: RSA keys made here, a JWKS served on 127.0.0.1, and signed JWTs on demand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.test"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Issuer:
    """Signs tokens with ``key`` (kid ``k1``); ``jwks_url`` serves its public key."""

    jwks_url: str
    audience: str
    key: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey = field(default_factory=lambda: new_key())
    """A key the JWKS does not publish (for tampered/forged tokens)."""
    issuer: str = ISSUER

    def token(self, sub: str = "alice", *, scope: str = "models:invoke", key: rsa.RSAPrivateKey | None = None,
              ttl_s: float = 3600, **claims: Any) -> str:  # fmt: skip
        """A signed JWT; override any claim (``aud``, ``iss``, ``exp``...) through ``claims``."""
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "sub": sub, "iat": now,
                                "exp": now + int(ttl_s), "scope": scope}  # fmt: skip
        body.update(claims)
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": "k1"})

    def unsigned(self, sub: str = "alice", **claims: Any) -> str:
        """An ``alg: none`` token (must be refused)."""
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "sub": sub, "exp": now + 3600, **claims}
        return jwt.encode(body, None, algorithm="none", headers={"kid": "k1"})

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The ``auth.oauth`` settings for this issuer."""
        return {"issuer": self.issuer, "audience": self.audience, "jwks_url": self.jwks_url, **overrides}


@contextmanager
def serve_issuer(audience: str) -> Iterator[Issuer]:
    """Serve a JWKS on 127.0.0.1 for the duration of the block."""
    key = new_key()
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Issuer(f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json", audience, key)
    finally:
        httpd.shutdown()
        httpd.server_close()
