"""uvicorn's httptools protocol with one socket write per response and the HTTP server's own limits
(``uvicorn.Config(http=SingleWriteProtocol.with_limits(settings.http))``).

One write: stock uvicorn writes the status line and headers when the app sends ``http.response.start`` and the body
when it sends ``http.response.body``: two ``send()`` syscalls, and with Nagle on (``--workers`` >= 2 loses
TCP_NODELAY) the second waits for the client's delayed ACK, about 40 ms. Here the transport gathers every write made
during one event-loop step and sends them as one buffer at the end of it, and TCP_NODELAY is set on every connection
whatever the listening socket's origin.

Limits (``HttpSettings``; docs/reliability.md "Limits"), none of which stock uvicorn has:

- **Header size**: more than ``max_header_bytes`` of request line and headers is answered 431 and the connection
  closed; the bytes are counted as they arrive, so a 64 MB header is never buffered.
- **Read timeouts**: the headers must arrive within ``header_timeout_s`` (from a new connection, or from a request's
  first byte on a kept-alive one) and the body within ``body_timeout_s`` of the headers; past either, 408 and close
  (an app still waiting for that body sees ``http.disconnect``). The keep-alive timeout is uvicorn's, unchanged.
- **Lingering close**: when a connection must close while the client is still sending its body (a 413 answered from
  ``Content-Length``, a ``Connection: close`` request answered early), the answer is sent, the write side shut, and
  the rest of the body read and discarded (at most ``linger_bytes``, ``linger_s``) before closing, as nginx does:
  closing a socket with unread data sends a reset, and clients that send the whole body before reading (Python's
  urllib) then see ``ECONNRESET`` instead of the answer. An answer sent before the body was read keeps the
  connection alive when at most ``keep_alive_drain_bytes`` are still to come (uvicorn discards them).
- **Client gone**: while the app has marked a request cancellable (``scope[CANCEL_ON_DISCONNECT]``, set by the
  scoring fast path once the request is admitted), losing the connection cancels the request's task, so its waiting
  or queued inference is dropped instead of computed for nobody; the app ends the request quietly on that
  cancellation (``scope[CANCELLED]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from server.rest.errors import transport_error
from server.settings import HttpSettings

CANCEL_ON_DISCONNECT = "modelport.cancel_on_disconnect"
"""Scope key: while true, the client going away cancels the request's task (``SingleWriteProtocol``); the app must
then end the request quietly on that ``CancelledError`` when ``scope[CANCELLED]`` is true (and raise it otherwise)."""
CANCELLED = "modelport.cancelled"
"""Scope key the protocol sets just before it cancels a request's task because the client went away."""

# Where the connection is in reading a request. IDLE: between requests (waiting for the next head); HEAD: a request's
# line and headers are arriving; BODY: its body is; LINGER: closing, the rest is discarded.
_IDLE, _HEAD, _BODY, _LINGER = 0, 1, 2, 3


class _GatheringTransport:
    """Delegates to a transport, joining the writes of one loop step into one ``write``.

    ``on_close`` may take a ``close()`` over (return ``True``): the protocol lingers instead of closing at once.
    """

    __slots__ = ("_loop", "_parts", "_transport", "on_close")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []
        self.on_close: Any = None

    def write(self, data: bytes) -> None:
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        parts = self._parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self.on_close is not None and self.on_close():
            return
        self.close_now()

    def close_now(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._parts.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SingleWriteProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose responses leave in one write, with TCP_NODELAY on and the limits above."""

    limits: ClassVar[HttpSettings] = HttpSettings()

    @classmethod
    def with_limits(cls, limits: HttpSettings) -> type[SingleWriteProtocol]:
        """This protocol with other limits, for ``uvicorn.Config(http=...)`` (which takes a class)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._fresh = True  # no request begun yet on this connection
        self._head_bytes = 0  # bytes received while reading a head
        self._body_seen = 0  # body bytes received for the current request
        self._completed = 0  # requests received in full
        self._timer: asyncio.TimerHandle | None = None
        self._timer_phase = _IDLE
        self._linger_left = 0
        self._lost = False
        self._closing_now = False
        self._task: asyncio.Task[None] | None = None
        self._task_cycle: RequestResponseCycle | None = None
        self._gathering: _GatheringTransport | None = None

    # ---------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        gathering = _GatheringTransport(transport, self.loop)
        gathering.on_close = self._close_requested
        self._gathering = gathering
        super().connection_made(gathering)  # type: ignore[arg-type]
        self._arm(_HEAD, self.limits.header_timeout_s)  # a connection that never sends a head is closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm()
        cycle, task = self._task_cycle, self._task
        self._task = self._task_cycle = None
        if cycle is not None and task is not None and not cycle.response_complete and not task.done():
            scope: Any = cycle.scope
            if scope.get(CANCEL_ON_DISCONNECT):
                scope[CANCELLED] = True
                cycle.disconnected = True
                task.cancel()
        super().connection_lost(exc)
        if self._gathering is not None:
            self._gathering.on_close = None  # no reference cycle outlives the connection (the GC need not find it)

    def shutdown(self) -> None:
        self._closing_now = True  # server shutdown: no lingering
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._phase == _LINGER:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self._close_now()
            return
        self._unset_keepalive_if_required()
        try:
            self._feed(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            self._disarm()
            self._phase = _IDLE
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        phase = self._phase
        if phase != self._timer_phase:  # the common case (a whole request per read) ends IDLE with no timer
            if phase == _BODY:
                self._arm(_BODY, self.limits.body_timeout_s)
            elif phase == _HEAD:
                self._arm(_HEAD, self.limits.header_timeout_s)
            elif phase == _IDLE and not self._fresh:
                self._disarm()

    def _feed(self, data: bytes) -> None:
        """Feed the parser, counting the bytes of heads so that one larger than the limit is refused as it grows."""
        limit = self.limits.max_header_bytes
        view: bytes | memoryview = data
        while view:
            if self._phase == _BODY:
                self.parser.feed_data(view)
                return
            room = limit - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            if len(view) <= room:
                self._head_bytes += len(view)
                self.parser.feed_data(view)
                return
            # More than the head may still take: feed up to the limit, then see whether the head ended in it.
            view = memoryview(view)
            completed = self._completed
            self._head_bytes += room
            self.parser.feed_data(view[:room])
            view = view[room:]
            if self._phase == _LINGER:
                return
            if self._completed != completed and self._phase != _BODY:
                self._head_bytes = 0  # a whole request ended in that slice; the next head starts afresh

    # ---------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self._fresh = False
        self._body_seen = 0
        self._unset_keepalive_if_required()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_seen += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        self._head_bytes = 0
        self._completed += 1
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and self.timeout_keep_alive_task is None and not self.pipeline:
            # The answer went out before this body was read (and the connection stayed alive to drain it): the
            # connection is idle now, so the keep-alive timeout runs again.
            handler = self.timeout_keep_alive_handler
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, handler)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._phase == _LINGER:
            self.server_state.total_requests += 1
            return
        if self._phase == _BODY and not self._lost:
            left = self._body_left()
            unsent = self.expect_100_continue and not self._body_seen  # it may never come: close
            if left is None or left > self.limits.keep_alive_drain_bytes or unsent:
                self.server_state.total_requests += 1
                self._linger()
                return
        super().on_response_complete()

    # ---------------------------------------------------------------- the app's task

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        run = cycle.run_asgi(app)
        if getattr(self.config, "reset_contextvars", False):
            task = self.loop.create_task(run, context=contextvars.Context())
        else:
            task = self.loop.create_task(run)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._task, self._task_cycle = task, cycle

    # ---------------------------------------------------------------- limits

    def _arm(self, phase: int, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._on_timer)
        self._timer_phase = phase

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_phase = _IDLE

    def _on_timer(self) -> None:
        phase = self._timer_phase
        self._timer, self._timer_phase = None, _IDLE
        if self._lost:
            return
        if phase == _LINGER:
            self._close_now()
        elif phase == _HEAD and self._phase in (_IDLE, _HEAD):
            if self._phase == _HEAD or self._fresh:
                self._answer(408, f"request headers not received within {self.limits.header_timeout_s:g}s")
                self._close_now()
        elif phase == _BODY and self._phase == _BODY:
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                cycle.disconnected = True  # the app waiting for this body sees http.disconnect
                cycle.message_event.set()
                self._answer(408, f"request body not received within {self.limits.body_timeout_s:g}s")
            self._close_now()

    def _refuse_head(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # a pipelined head: the answer would come first
            self._close_now()
            return
        self._answer(431, f"request line and headers exceed {self.limits.max_header_bytes} bytes")
        self._linger()

    def _answer(self, status: int, message: str) -> None:
        """An error the server answers itself, before any route (the body shape is the REST door's)."""
        assert self._gathering is not None
        body = transport_error(status, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body))
        self._gathering.write(b"".join(head) + body)

    def _body_left(self) -> int | None:
        """Body bytes of the current request still to come (``None``: unknown, e.g. chunked)."""
        for name, value in self.headers or ():
            if name == b"content-length":
                return int(value) - self._body_seen if value.isdigit() else None
        return None

    def _close_requested(self) -> bool:
        """``transport.close()`` was called: linger instead when the client is still sending its request."""
        if self._phase == _LINGER:
            return True
        if self._lost or self._closing_now or self._phase == _IDLE:
            return False
        self._linger()
        return True

    def _linger(self) -> None:
        """Send what is written, shut the write side, then read and discard the rest of the request (bounded)."""
        assert self._gathering is not None
        left = self._body_left() if self._phase == _BODY else None
        self._phase = _LINGER
        limits = self.limits
        self._linger_left = limits.linger_bytes if left is None else min(left, limits.linger_bytes)
        if self._linger_left <= 0:
            self._close_now()
            return
        self._gathering.flush()
        transport = self._gathering._transport
        if transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()
        self.flow.resume_reading()
        self._arm(_LINGER, limits.linger_s)

    def _close_now(self) -> None:
        self._disarm()
        self._phase = _LINGER  # nothing more is parsed
        if self._gathering is not None:
            self._gathering.close_now()
