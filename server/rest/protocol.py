"""uvicorn's httptools protocol with one socket write per response (``uvicorn.Config(http=SingleWriteProtocol)``).

Stock uvicorn writes the status line and headers when the app sends ``http.response.start`` and the body when it
sends ``http.response.body``: two ``send()`` syscalls, and with Nagle on (``--workers`` >= 2 loses TCP_NODELAY) the
second waits for the client's delayed ACK, about 40 ms. Here the transport gathers every write made during one
event-loop step and sends them as one buffer at the end of it, and TCP_NODELAY is set on every connection whatever
the listening socket's origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _GatheringTransport:
    """Delegates to a transport, joining the writes of one loop step into one ``write``."""

    __slots__ = ("_loop", "_parts", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

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
    """``HttpToolsProtocol`` whose responses leave in one write, with TCP_NODELAY on."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(_GatheringTransport(transport, self.loop))  # type: ignore[arg-type]
