"""MCP sessions that a flood cannot exhaust: per-owner bounds and least-recently-used eviction.

The SDK's ``StreamableHTTPSessionManager`` keeps up to ``max_sessions`` (10,000) sessions for 30 minutes of idleness
and then refuses every new client with 503 "Too many open sessions". Measured before this module: 10,000
``initialize`` calls without ``DELETE`` from one client took ~20 s, raised RSS from 320 to 712 MB (~40 KB a session),
and locked every other client out for half an hour.

``BoundedSessionManager`` instead:

* bounds the sessions of one owner (the authenticated principal, or the client address when auth is off) to
  ``per_owner``; a new session past it evicts that owner's least recently used idle session;
* past the global ``max_sessions``, evicts the least recently used idle session of whoever holds the most;
* closes sessions idle for ``session_idle_timeout`` (5 minutes by default, setting ``mcp_session_idle_s``).

A session with a request in flight (or an open stream) is never evicted; a client whose session was evicted gets the
spec's 404 "Session not found" and opens a new one (every SDK client does this on its own).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

_HEADER = MCP_SESSION_ID_HEADER.lower().encode("latin-1")


class BoundedSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager with per-owner bounds and LRU eviction of idle sessions."""

    def __init__(self, *args: Any, per_owner: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if per_owner < 1:
            raise ValueError("per_owner must be at least 1")
        self.per_owner = per_owner
        self.evicted = 0
        """Sessions evicted to make room (for metrics and tests)."""
        self._owner_of: dict[str, str] = {}
        self._last_used: dict[str, float] = {}

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = _session_id(scope)
        if session_id is None:
            owner = _owner(scope)
            async with self._session_creation_lock:
                await self._make_room(owner)
            before = set(self._server_instances)
            try:
                await super()._handle_stateful_request(scope, receive, send)
            finally:
                for new in set(self._server_instances) - before:
                    self._owner_of[new] = owner
                    self._last_used[new] = time.monotonic()
            return
        if session_id in self._last_used:
            self._last_used[session_id] = time.monotonic()
        await super()._handle_stateful_request(scope, receive, send)

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        self._owner_of.pop(session_id, None)
        self._last_used.pop(session_id, None)
        await super()._discard_session(session_id, transport)

    async def _make_room(self, owner: str) -> None:
        """Evict idle sessions so that ``owner`` may open one more (called under the creation lock)."""
        while True:
            mine = [s for s, o in self._owner_of.items() if o == owner and s in self._server_instances]
            if len(mine) < self.per_owner:
                break
            if not await self._evict_lru(mine):
                return  # all of them busy: the SDK's own limit decides
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            counts = Counter(o for s, o in self._owner_of.items() if s in self._server_instances)
            for heavy, _ in counts.most_common():
                if await self._evict_lru([s for s, o in self._owner_of.items() if o == heavy]):
                    return

    async def _evict_lru(self, candidates: list[str]) -> bool:
        idle = [s for s in candidates if _idle(self._server_instances.get(s))]
        if not idle:
            return False
        victim = min(idle, key=lambda s: self._last_used.get(s, 0.0))
        transport = self._server_instances.get(victim)
        if transport is None:
            return False
        self.evicted += 1
        log.info("evicting the least recently used idle MCP session", extra={"owner": self._owner_of.get(victim)})
        await self._discard_session(victim, transport)
        return True


def _session_id(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == _HEADER:
            return value.decode("latin-1")
    return None


def _owner(scope: Scope) -> str:
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        context = authorization_context(user)
        return f"principal:{context['client_id']}|{context['issuer']}|{context['subject']}"
    client = scope.get("client")
    return f"address:{client[0]}" if client else "address:?"


def _idle(transport: StreamableHTTPServerTransport | None) -> bool:
    # NOTE: the SDK keeps the in-flight count private; a session serving a request or holding a stream is busy.
    return transport is not None and getattr(transport, "_requests_in_flight", 0) == 0
