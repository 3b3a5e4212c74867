"""The MCP door as an OAuth 2.1 resource server, over the same ``Gate`` as REST (identity → permission → rate limit).

HTTP (``McpAuth``), built from the MCP SDK's own pieces:

* ``GateTokenVerifier``: the SDK's ``TokenVerifier`` over ``Gate.identify``, so personal access tokens (``mp_...``)
  and OAuth JWTs from the configured issuer are accepted exactly as REST accepts them. The ``AccessToken`` it returns
  names the principal as ``client_id``/``subject``/``claims["iss"]`` (the SDK binds a handshake-era session to that
  triple: a session id presented with another credential is answered 404) and carries the ``Principal`` itself.
* ``BearerAuthBackend`` + Starlette's ``AuthenticationMiddleware`` + ``AuthContextMiddleware`` +
  ``RequireAuthMiddleware`` around the ``/mcp`` endpoint only (a route, not app-wide middleware, which would turn
  the REST scoring fast path off): no or a bad token → 401, a JWT without a required scope → 403
  ``insufficient_scope``. The challenge names the reason, the scopes and, with OAuth, the RFC 9728 document.
* ``/.well-known/oauth-protected-resource/mcp`` (``create_protected_resource_routes``) when an OAuth issuer is
  configured: the issuer (or ``auth.oauth.authorization_servers``) and the required scopes. With personal access
  tokens only there is no authorization server to announce (RFC 9728 needs one), so no document is published and
  the 401 carries no ``resource_metadata``; clients are configured with a header instead.

Inside the handlers (``ToolAccess``): ``tools/list`` shows the tools the caller may query (``CAN_QUERY``),
``tools/call`` authorizes and applies the model's rate limits, model cards need ``CAN_VIEW``. The principal comes
from the SDK's ``get_access_token()`` (the SDK hands the request's context variables to the handler in both
protocol eras), with the request scope's ``user`` as a second source; a request over HTTP without either is refused.
stdio is local and unauthenticated (``local_caller``): its caller may do everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware, get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl, ConfigDict, Field, InstanceOf, TypeAdapter
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import PermissionDenied, Unauthenticated
from server.ops.gate import HOW_TO, Gate
from server.ops.identity import ANONYMOUS, Level, Principal, Resource
from server.ops.oauth import InvalidToken
from server.settings import Settings

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"

_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))
"""URLs as written: a hand-built ``AnyHttpUrl("https://issuer")`` would gain a trailing slash (and then no longer
equal the issuer's own ``iss``)."""

_LOCAL: ContextVar[bool] = ContextVar("modelport_mcp_local", default=False)
_REFUSALS: ContextVar[list[str] | None] = ContextVar("modelport_mcp_refusals", default=None)
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


# -- tokens -------------------------------------------------------------------------------------------------------


class GateAccessToken(AccessToken):
    """The SDK's ``AccessToken`` with the ``Principal`` the gate identified (never serialized)."""

    principal: InstanceOf[Principal] = Field(exclude=True, repr=False)


class GateTokenVerifier:
    """The SDK's ``TokenVerifier`` protocol over ``Gate.identify`` (personal access tokens and OAuth JWTs).

    A refused token is ``None`` (the SDK answers 401); the reason goes to the 401's ``error_description``. A valid
    JWT without a required scope is returned with its own scopes, so ``RequireAuthMiddleware`` answers 403
    ``insufficient_scope``. Personal access tokens carry no scopes: they get the required ones (their grants decide
    what they may do).
    """

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def verify_token(self, token: str) -> AccessToken | None:
        gate = self.gate
        try:
            principal = await gate.identify(f"Bearer {token}")
        except Unauthenticated as exc:
            _refuse(exc.message)
            return None
        except PermissionDenied as exc:  # a valid OAuth token lacking a required scope
            if gate.oauth is None:
                _refuse(exc.message)
                return None
            try:
                principal = await gate.oauth.verify(token)  # cached: identify has just verified it
            except InvalidToken as invalid:
                _refuse(f"invalid OAuth token: {invalid}")
                return None
            return access_token(token, principal, sorted(principal.scopes), _leeway(gate, principal))
        scopes = principal.scopes if principal.via == "oauth" else principal.scopes | gate.required_scopes
        return access_token(token, principal, sorted(scopes), _leeway(gate, principal))


def _leeway(gate: Gate, principal: Principal) -> float:
    """The clock-skew leeway the JWT verifier grants past ``exp`` (none for access tokens of our own)."""
    return gate.oauth.settings.leeway_s if gate.oauth is not None and principal.via == "oauth" else 0.0


def access_token(token: str, principal: Principal, scopes: list[str], leeway_s: float = 0.0) -> GateAccessToken:
    """The SDK's view of ``principal``: ``(client_id, claims.iss, subject)`` is what a session is bound to.

    Its ``expires_at`` carries the verifier's leeway, so the SDK's bearer backend (which checks ``expires_at``
    itself) accepts exactly what REST accepts: a JWT within the leeway past ``exp``.
    """
    return GateAccessToken(
        token=token,
        client_id=principal.name,
        subject=principal.name,
        scopes=scopes,
        expires_at=None if principal.expires_at is None else int(principal.expires_at + leeway_s),
        claims={"iss": principal.issuer or principal.via},
        principal=principal,
    )


def _refuse(reason: str) -> None:
    refusals = _REFUSALS.get()
    if refusals is not None:
        refusals.append(reason)
    log.info("MCP request refused: %s", reason)


def principal_of(token: AccessToken | None) -> Principal | None:
    return token.principal if isinstance(token, GateAccessToken) else None


# -- the HTTP side ------------------------------------------------------------------------------------------------


def resource_url(settings: Settings) -> AnyHttpUrl:
    """``auth.resource_url``, else ``http(s)://<host>:<port>/mcp`` (https when a certificate is configured)."""
    if settings.auth.resource_url:
        return _URL.validate_python(settings.auth.resource_url)
    host = settings.host
    if host in _WILDCARD_HOSTS:
        log.warning(
            "auth.resource_url is not set and the server binds %r: OAuth clients will be told the MCP resource is "
            "on that address; set auth.resource_url to the public URL of /mcp",
            host,
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if settings.ssl_certfile is not None else "http"
    return _URL.validate_python(f"{scheme}://{host}:{settings.port}{MCP_PATH}")


class McpAuth:
    """Guards the ``/mcp`` endpoint with the gate and publishes the RFC 9728 document (with OAuth configured).

    Args:
        gate: the shared gate (``enabled``).
        settings: read for ``auth.oauth`` (issuer, authorization servers), ``auth.resource_url``, host, port, TLS.
    """

    def __init__(self, gate: Gate, settings: Settings) -> None:
        self.gate = gate
        self.verifier = GateTokenVerifier(gate)
        self.required_scopes = sorted(gate.required_scopes)
        oauth = settings.auth.oauth
        servers = (oauth.authorization_servers or (oauth.issuer,)) if oauth is not None else ()
        self.authorization_servers = [_URL.validate_python(s) for s in servers]
        self.resource_url = resource_url(settings) if servers else None
        """The public URL of ``/mcp`` announced in the RFC 9728 document (only with OAuth)."""
        self.metadata_url = None if self.resource_url is None else build_resource_metadata_url(self.resource_url)

    def protect(self, endpoint: ASGIApp) -> ASGIApp:
        """``endpoint`` behind the SDK's bearer-token stack (401/403 with a ``WWW-Authenticate`` challenge)."""
        required = RequireAuthMiddleware(endpoint, self.required_scopes, self.metadata_url)
        authenticated = AuthenticationMiddleware(
            AuthContextMiddleware(required), backend=BearerAuthBackend(self.verifier)
        )
        return _Challenge(authenticated, self.required_scopes, self.metadata_url, self._how_to())

    def routes(self) -> list[Route]:
        """The RFC 9728 document at ``/.well-known/oauth-protected-resource<path of the resource URL>`` (none
        without OAuth: the document must name an authorization server)."""
        if self.resource_url is None:
            return []
        return create_protected_resource_routes(
            resource_url=self.resource_url,
            authorization_servers=self.authorization_servers,
            scopes_supported=self.required_scopes or None,
            resource_name="modelport MCP tools",
        )

    def _how_to(self) -> str:
        how_to = f"authentication required: {HOW_TO}"
        if self.authorization_servers:
            how_to += f"; OAuth access tokens from {self.authorization_servers[0]} are accepted too"
        return how_to


class _Challenge:
    """Outermost layer of the guarded endpoint: completes the SDK's 401/403 challenge.

    ``RequireAuthMiddleware`` says only "Authentication required"; this puts the reason the token was refused
    (expired, wrong audience, revoked ...) or how to get one in ``error_description``, and adds ``scope=`` as the MCP
    authorization spec asks. The status and ``resource_metadata`` are the SDK's.
    """

    def __init__(self, app: ASGIApp, scopes: list[str], metadata_url: AnyHttpUrl | None, how_to: str) -> None:
        self.app = app
        self.scope_text = " ".join(scopes)
        self.metadata_url = None if metadata_url is None else str(metadata_url)
        self.how_to = how_to

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusals: list[str] = []
        token = _REFUSALS.set(refusals)
        held: Message | None = None

        async def send_challenge(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and _is_challenge(message):
                held = message  # rewritten with its body, which the SDK sends next
                return
            if held is not None and message["type"] == "http.response.body":
                start, held = held, None
                for out in self._rewrite(start, refusals):
                    await send(out)
                return
            await send(message)

        try:
            await self.app(scope, receive, send_challenge)
        finally:
            _REFUSALS.reset(token)

    def _rewrite(self, start: Message, refusals: list[str]) -> list[Message]:
        headers = list(start.get("headers", ()))
        challenge = next(v for k, v in headers if k.lower() == b"www-authenticate").decode("latin-1")
        error = _param(challenge, "error") or "invalid_token"
        if start["status"] == 401:
            description = refusals[-1] if refusals else self.how_to
        else:
            description = _param(challenge, "error_description") or "insufficient scope"
        parts = [f'error="{_quoted(error)}"', f'error_description="{_quoted(description)}"']
        if self.metadata_url is not None:
            parts.append(f'resource_metadata="{self.metadata_url}"')
        if self.scope_text:
            parts.append(f'scope="{_quoted(self.scope_text)}"')
        body = json.dumps({"error": error, "error_description": description}).encode()
        kept = [(k, v) for k, v in headers if k.lower() not in (b"www-authenticate", b"content-length")]
        kept += [
            (b"www-authenticate", ("Bearer " + ", ".join(parts)).encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
        ]
        return [{**start, "headers": kept}, {"type": "http.response.body", "body": body}]


def _is_challenge(start: Message) -> bool:
    return start["status"] in (401, 403) and any(k.lower() == b"www-authenticate" for k, _ in start.get("headers", ()))


def _param(challenge: str, name: str) -> str | None:
    found = re.search(rf'(?:^|[\s,]){name}="([^"]*)"', challenge)
    return None if found is None else found.group(1)


def _quoted(text: str) -> str:
    """Safe inside a quoted-string of a latin-1 header: no quotes, backslashes or control characters."""
    return "".join(c if c.isprintable() and c not in '"\\' and ord(c) < 256 else "'" for c in text)


# -- inside the handlers ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_caller() -> Iterator[None]:
    """Requests served inside this block (stdio, started within it) come from the local user: no credential."""
    token = _LOCAL.set(True)
    try:
        yield
    finally:
        _LOCAL.reset(token)


class ToolAccess:
    """Who calls a handler and what they may do; everything is allowed without a gate.

    Args:
        gate: the shared gate, or ``None`` (no identity, no permissions, no rate limits).
    """

    def __init__(self, gate: Gate | None) -> None:
        self.gate = gate

    @property
    def per_caller(self) -> bool:
        """Whether results differ by caller (auth on)."""
        return self.gate is not None and self.gate.enabled

    def caller(self, ctx: Any) -> Principal:
        """The principal of the request being handled; ``Unauthenticated`` over HTTP without a credential."""
        gate = self.gate
        if gate is None or not gate.enabled or _LOCAL.get():
            return ANONYMOUS
        principal = principal_of(get_access_token())
        if principal is None:  # the SDK carries the request's context to handlers; the request scope is a fallback
            request = getattr(ctx, "request", None)
            user = getattr(request, "scope", {}).get("user") if request is not None else None
            if isinstance(user, AuthenticatedUser):
                principal = principal_of(user.access_token)
        if principal is None:
            raise Unauthenticated(f"authentication required: {HOW_TO}", field="Authorization")
        return principal

    def may(self, principal: Principal, model: str, level: Level) -> bool:
        return self.gate is None or self.gate.can(principal, Resource("model", model), level)

    def authorize(self, principal: Principal, model: str, level: Level) -> None:
        """``PermissionDenied`` unless ``principal`` holds ``level`` on the model."""
        if self.gate is not None:
            self.gate.authorize(principal, Resource("model", model), level)

    def enter_call(self, principal: Principal, model: str) -> None:
        """A tool call: ``CAN_QUERY`` on the model, then its rate limits (``PermissionDenied``, ``RateLimited``)."""
        gate = self.gate
        if gate is not None:
            resource = Resource("model", model)
            gate.authorize(principal, resource, Level.CAN_QUERY)
            gate.admit(principal, resource)
