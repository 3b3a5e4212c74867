"""Safe defaults before serving: refuse to expose a server nobody can authenticate to, warn about open ones.

``check_exposure`` is the decision (pure: settings + whether tokens exist); ``preflight`` applies it at the entry
point (looks up ``auth.db`` without creating it, prints or logs, and says whether to stop).
"""

from __future__ import annotations

import logging
import sys
from typing import NamedTuple

from server.settings import Settings

log = logging.getLogger("modelport.security")


class Exposure(NamedTuple):
    """Whether to serve, and what to tell the operator (``message`` at ``level``) before serving or refusing."""

    ok: bool
    message: str | None = None
    level: int = logging.INFO


def check_exposure(settings: Settings, tokens_exist: bool) -> Exposure:
    """The decision for ``settings`` (``tokens_exist``: at least one token in ``auth.db``).

    - non-loopback bind, not ``insecure``, no token and no OAuth issuer: refuse (nobody could authenticate, and the
      only way to make it work would be to turn auth off without saying so);
    - non-loopback bind with ``insecure`` (and auth not required): serve, with a warning on every start;
    - auth on but no token and no OAuth issuer (loopback with ``auth.required``): serve, warning that every request
      will get 401;
    - otherwise: serve, nothing to say.
    """
    address = _address(settings)
    credentials = tokens_exist or settings.auth.oauth is not None
    if not settings.loopback and not settings.insecure and not credentials:
        return Exposure(
            False,
            f"modelport: refusing to serve {address} without authentication: it is not a loopback address, and "
            "no access token exists and no OAuth issuer is configured, so nobody could call it.\n"
            "Fix one of:\n"
            f"  - create an admin token:  modelport tokens create NAME --admin --state-dir {settings.state_dir}\n"
            "    (clients send it as 'Authorization: Bearer <token>')\n"
            "  - configure an OAuth issuer:  "
            """MODELPORT_AUTH='{"oauth": {"issuer": "...", "audience": "...", "jwks_url": "..."}}'\n"""
            "  - serve this machine only:  --host 127.0.0.1\n"
            "  - on a trusted network only, serve without authentication:  --insecure",
            logging.ERROR,
        )
    if not settings.auth_enabled and not settings.loopback:
        return Exposure(
            True,
            f"serving {address} with --insecure: authentication is off, so anyone who can reach this address can "
            "list, score and manage every model; create a token (modelport tokens create NAME --admin) and drop "
            "--insecure to require one",
            logging.WARNING,
        )
    if settings.auth_enabled and not credentials:
        return Exposure(
            True,
            "authentication is required but no access token exists and no OAuth issuer is configured: every request "
            "(but /ping and /health) will get 401; create one with: "
            f"modelport tokens create NAME --admin --state-dir {settings.state_dir}",
            logging.WARNING,
        )
    return Exposure(True)


def check_tls(settings: Settings) -> str | None:
    """A one-line problem with the TLS settings, or ``None`` (no TLS, or a certificate and key that exist)."""
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        return "modelport: --ssl-keyfile needs --ssl-certfile"
    for flag, path in (("--ssl-certfile", settings.ssl_certfile), ("--ssl-keyfile", settings.ssl_keyfile)):
        if path is not None and not path.is_file():
            return f"modelport: {flag} {path}: no such file"
    return None


def preflight(settings: Settings) -> int | None:
    """Apply ``check_tls`` and ``check_exposure`` before serving: an exit code to stop with, or ``None`` to serve."""
    from server.ops.authdb import AuthDB
    from server.ops.tokens import TokenStore

    problem = check_tls(settings)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    db = AuthDB(settings.auth_db)
    try:
        tokens_exist = TokenStore(db).any()
    finally:
        db.close()
    exposure = check_exposure(settings, tokens_exist)
    if not exposure.ok:
        print(exposure.message, file=sys.stderr)
        return 2
    if exposure.message is not None:
        log.log(exposure.level, exposure.message, extra={"host": settings.host, "port": settings.port})
    return None


def _address(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host and not settings.host.startswith("[") else settings.host
    return f"{host}:{settings.port}"
