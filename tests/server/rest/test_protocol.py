"""The single-write HTTP protocol: writes of one loop step leave as one, TCP_NODELAY is on, HTTP still works."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from server.rest.protocol import SingleWriteProtocol, _GatheringTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def _next_step() -> None:
    """Wait until the callbacks already scheduled on the loop have run (FIFO), without a timer."""
    step = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(step.set_result, None)
    await step


def test_writes_of_one_loop_step_leave_together() -> None:
    async def run() -> FakeTransport:
        fake = FakeTransport()
        gathering = _GatheringTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        gathering.write(b"HTTP/1.1 200 OK\r\n\r\n")
        gathering.write(b"body")
        assert fake.writes == [] and gathering.get_write_buffer_size() == 23
        await _next_step()  # the flush callback, scheduled first, has run
        gathering.write(b"next")
        gathering.close()  # close flushes what is pending first
        assert gathering.get_extra_info("peername") == "info:peername"
        return fake

    fake = asyncio.run(run())
    assert fake.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"] and fake.closed


def test_abort_drops_pending_writes() -> None:
    async def run() -> FakeTransport:
        fake = FakeTransport()
        gathering = _GatheringTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        gathering.write(b"lost")
        gathering.abort()
        await _next_step()
        return fake

    fake = asyncio.run(run())
    assert fake.writes == [] and fake.aborted


NODELAY: list[int] = []


class Probe(SingleWriteProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        NODELAY.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = int(scope["path"].strip("/") or 1)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
    await send({"type": "http.response.body", "body": b"x" * size})


@pytest.fixture
def server() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=Probe, lifespan="off", log_config=None, access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield port
    srv.should_exit = True
    thread.join(timeout=10)


def test_keep_alive_requests_and_large_bodies(server: int) -> None:
    NODELAY.clear()
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    sizes = [1, 10, 3_000_000, 5]
    for size in sizes:
        conn.request("GET", f"/{size}")
        response = conn.getresponse()
        assert response.status == 200 and len(response.read()) == size
    conn.close()
    assert NODELAY == [1]  # one connection for every request, with Nagle off
