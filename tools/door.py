"""``McpDoor``: the MCP transport of modelport, Streamable HTTP at ``/mcp`` (both protocol eras) and stdio.

Wiring in the composition root::

    door = McpDoor(service, settings, gate=gate)
    door.install(app)                  # the route at exactly /mcp (app.mount would answer /mcp with a redirect),
                                       # guarded by the gate when auth is on, + the RFC 9728 document (OAuth)
    async with door.lifespan():        # inside the app's lifespan: MCP sessions + change notifications
        ...
    await door.run_stdio()             # `modelport mcp --stdio`: nothing but protocol on stdout

Deployment changes (``InferenceService.subscribe``; called from any thread) and, with auth on, permission changes
(``Gate.on_change``: ACLs and tokens) become ``tools/list_changed`` and ``resources/list_changed`` notifications
for clients of both eras while ``lifespan()``, ``notifications()`` or ``run_stdio()`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from server.ops.gate import Gate
from server.ops.record import Recorder
from server.service import InferenceService
from server.settings import Settings
from tools.auth import MCP_PATH, McpAuth, local_caller
from tools.server import ToolServer
from tools.sessions import BoundedSessionManager

log = logging.getLogger(__name__)

__all__ = ["MCP_PATH", "ChangeFeed", "McpDoor"]


class ChangeFeed:
    """Turns a synchronous "something changed" call from any thread into wake-ups of async notifiers.

    Bursts coalesce: several changes before a notifier runs produce one notification.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def fire(self) -> None:
        with self._lock:
            targets = list(self._targets)
        for loop, event in targets:
            with contextlib.suppress(RuntimeError):  # the loop closed under us; its notifier is gone
                loop.call_soon_threadsafe(event.set)

    async def run(self, notify: Callable[[], Awaitable[None]]) -> None:
        """Call ``notify()`` after every (coalesced) change until cancelled."""
        target = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._targets.add(target)
        try:
            while True:
                await target[1].wait()
                target[1].clear()
                try:
                    await notify()
                except Exception:
                    log.exception("could not notify MCP clients of a deployment change")
        finally:
            with self._lock:
                self._targets.discard(target)


class McpDoor:
    """The MCP door over one ``InferenceService``.

    Args:
        service: the shared inference service.
        settings: read for ``mcp_allowed_hosts``, ``mcp_allowed_origins`` (DNS-rebinding protection),
            ``max_body_bytes`` and, with auth on, ``auth`` (OAuth issuer, resource URL), host, port and TLS.
        gate: identity, permissions and rate limits shared with REST. When ``gate.enabled``, ``/mcp`` needs a
            bearer token (a personal access token or an OAuth JWT) and each caller sees and calls only the models
            it may (``tools/auth.py``); ``None`` or disabled: ``/mcp`` is open (rate limits of a disabled gate
            still apply to tool calls, as on REST). stdio is never authenticated.
    """

    def __init__(
        self,
        service: InferenceService,
        settings: Settings,
        *,
        gate: Gate | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.gate = gate
        self.auth = McpAuth(gate, settings) if gate is not None and gate.enabled else None
        """The HTTP guard of ``/mcp`` (``None`` when auth is off)."""
        self.tools = ToolServer(
            service,
            gate=gate,
            recorder=recorder,
            schema_dialect=settings.mcp_schema,
            page_size=settings.mcp_page_size,
            page_bytes=settings.mcp_page_bytes,
            tools_mode=settings.mcp_tools,
        )
        self.server = self.tools.server
        """The low-level MCP server (``mcp.Client(door.server)`` connects in-process)."""
        self._feed = ChangeFeed()
        self._endpoint: ASGIApp | None = None
        self.sessions: BoundedSessionManager | None = None
        """The HTTP session manager (built with ``asgi_app()``)."""
        service.subscribe(self._feed.fire)
        if gate is not None and gate.enabled:  # a grant or revocation changes who sees which tools
            gate.on_change(self._feed.fire)

    # -- HTTP ---------------------------------------------------------------------------------------------------

    def asgi_app(self) -> ASGIApp:
        """The Streamable HTTP endpoint (both eras), to be routed at exactly ``/mcp`` (see ``route``); behind the
        bearer-token guard when auth is on."""
        if self._endpoint is None:
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=list(self.settings.mcp_allowed_hosts),
                allowed_origins=list(self.settings.mcp_allowed_origins),
            )
            # Our session manager (the SDK's, bounded per owner); we route it ourselves so the path is exactly /mcp.
            self.sessions = BoundedSessionManager(
                app=self.server,
                security_settings=security,
                max_request_body_size=self.settings.max_body_bytes,
                session_idle_timeout=self.settings.mcp_session_idle_s,
                max_sessions=self.settings.mcp_max_sessions,
                per_owner=self.settings.mcp_sessions_per_owner,
            )
            endpoint: ASGIApp = StreamableHTTPASGIApp(self.sessions)
            self._endpoint = endpoint if self.auth is None else self.auth.protect(endpoint)
        return self._endpoint

    def route(self) -> Route:
        """A Starlette route serving the endpoint at ``/mcp`` (every method: POST, GET, DELETE)."""
        return Route(MCP_PATH, endpoint=self.asgi_app(), include_in_schema=False)

    def routes(self) -> list[BaseRoute]:
        """``/mcp``, and with OAuth on ``/.well-known/oauth-protected-resource/mcp`` (RFC 9728)."""
        extra: list[BaseRoute] = list(self.auth.routes()) if self.auth is not None else []
        return [self.route(), *extra]

    def install(self, app: Starlette) -> None:
        """Add ``routes()`` to a Starlette or FastAPI app, ahead of its other routes (and any catch-all).

        They are plain routes, not middleware: the REST app's dependencies and its scoring fast path are untouched.
        """
        app.router.routes[0:0] = self.routes()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run MCP HTTP sessions and change notifications; enter once, inside the app's lifespan."""
        self.asgi_app()
        assert self.sessions is not None
        async with self.sessions.run(), self.notifications():
            watcher = asyncio.create_task(_close_on_server_exit(self.close_streams), name="mcp-shutdown-watcher")
            try:
                yield
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                self.close_streams()

    def close_streams(self) -> None:
        """End open 2026-era ``subscriptions/listen`` streams gracefully (call when the server starts shutting down).

        uvicorn waits for open responses before it runs the lifespan shutdown, so long-lived listen streams would
        hold a shutdown until its graceful timeout. ``lifespan()`` calls this when uvicorn begins to exit on a
        signal; a server run without signal handlers (e.g. in a thread) can call it itself. Handshake-era GET
        streams are SSE responses that sse-starlette already ends on shutdown.
        """
        self.tools.listen.close()

    # -- notifications and stdio --------------------------------------------------------------------------------

    @asynccontextmanager
    async def notifications(self) -> AsyncIterator[None]:
        """Forward deployment changes to MCP clients while inside (``lifespan``/``run_stdio`` enter it)."""
        task = asyncio.create_task(self._feed.run(self.tools.notify_changed), name="mcp-change-notifier")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run_stdio(self) -> None:
        """Serve one client over stdin/stdout until it disconnects (both eras); the local user needs no credential."""
        with local_caller():
            async with stdio_server() as (read, write), self.notifications():
                await self.server.run(read, write, self.server.create_initialization_options())

    def describe(self) -> dict[str, Any]:
        """What is published now: tool names and skipped deployments with reasons (for logs and /health)."""
        catalog = self.tools.catalog()
        directory = self.tools.directory
        models = [t.name for t in self.tools.tools(catalog)] if directory.per_model else []
        names = list(directory.names) + [n for n in models if n not in directory.names]
        return {"tools": names, "skipped": dict(catalog.skipped)}


async def _close_on_server_exit(close: Callable[[], None], poll_s: float = 0.5) -> None:
    # NOTE: sse-starlette (an mcp dependency) flips AppStatus.should_exit when uvicorn handles SIGINT/SIGTERM, before
    # uvicorn waits for open responses; uvicorn offers no hook of its own, so watch the flag (as sse-starlette does).
    try:
        from sse_starlette.sse import AppStatus
    except ImportError:  # pragma: no cover - mcp always brings it
        return
    while not AppStatus.should_exit:
        await asyncio.sleep(poll_s)
    log.info("server exiting: closing MCP listen streams")
    close()
