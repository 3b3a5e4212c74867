"""The HTTP server's own limits over real sockets: header size (431), header and body read timeouts (408), lingering
close after an early answer (every client sees the 413, none a reset), and a client that goes away while its request
waits in the queue (the request is dropped, never run)."""

from __future__ import annotations

import gc
import http.client
import logging
import socket
import threading
import urllib.error
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import numpy as np
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from server.deployments import Deployment, DeploymentTable
from server.rest.app import create_rest_app
from server.rest.protocol import SingleWriteProtocol
from server.runtime.batcher import BatcherConfig
from server.service import InferenceService
from server.settings import HttpSettings
from tests.server.fakes import doubler, fake_deployment

WAIT_S = 10.0
"""Upper bound of every wait (they normally end in milliseconds, or just after a configured timeout)."""
PATH = "/model/doubler/champion/invocations"
BODY = b'{"data": [[1.5, "a"]]}'
MB = 1024 * 1024


@contextmanager
def serving(
    app: Any, limits: HttpSettings | None = None, protocol: type[SingleWriteProtocol] = SingleWriteProtocol
) -> Iterator[int]:
    """uvicorn with ``protocol`` (and ``limits``) in a thread on a pre-bound socket; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    if limits is not None:
        protocol = protocol.with_limits(limits)
    config = uvicorn.Config(app, http=protocol, lifespan="on", log_config=None, access_log=False)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_S)


def rest_app(dep: Deployment, *, max_body_bytes: int = 1000) -> FastAPI:
    """The real REST app (fast path included) over one fake deployment, its batcher started on uvicorn's loop."""
    table = DeploymentTable()
    table.add(dep)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dep.batcher.start()
        yield
        await dep.batcher.stop(timeout_s=WAIT_S)

    return create_rest_app(InferenceService(table, max_body_bytes=max_body_bytes), lifespan=lifespan)


@pytest.fixture
def rest_port() -> Iterator[int]:
    with serving(rest_app(fake_deployment())) as port:
        yield port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a ``content-length`` (status, lower-case headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:]))
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (read until EOF; a reset counts as closed too)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True


def post_head(length: int, path: str = PATH, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


# ---------------------------------------------------------------- 413: every client sees it


def test_urllib_sees_the_413_not_a_reset(rest_port: int) -> None:
    """urllib sends the whole body before reading (and says ``Connection: close``): the rest is read and dropped."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{rest_port}{PATH}", data=b"x" * (32 * MB), headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=WAIT_S)
    assert info.value.code == 413
    assert orjson.loads(info.value.read())["error_code"] == "PAYLOAD_TOO_LARGE"


def test_a_keep_alive_client_sees_the_413_and_the_connection_closes(rest_port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=WAIT_S)
    conn.request("POST", PATH, body=b"x" * (32 * MB), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 413 and response.getheader("connection") == "close"
    assert orjson.loads(response.read())["error_code"] == "PAYLOAD_TOO_LARGE"
    conn.close()


def test_lingering_is_bounded_in_time() -> None:
    with serving(rest_app(fake_deployment()), HttpSettings(linger_s=0.2)) as port, connect(port) as sock:
        sock.sendall(post_head(100 * MB) + b"x" * 1000)  # then never the rest
        status, headers, _ = read_response(sock)
        assert status == 413 and headers["connection"] == "close"
        assert closed_by_server(sock)


# ---------------------------------------------------------------- header size and read timeouts


def test_headers_over_the_limit_are_431_while_still_arriving(rest_port: int) -> None:
    with connect(rest_port) as sock:
        head = post_head(len(BODY), extra="X-Big: " + "a" * (4 * MB) + "\r\n")
        sender = threading.Thread(target=lambda: sock.sendall(head + BODY), daemon=True)
        sender.start()  # 4 MB of header: refused after 64 KB, the rest read and discarded
        status, headers, body = read_response(sock)
        sender.join(WAIT_S)
        assert not sender.is_alive()
        sock.shutdown(socket.SHUT_WR)
        assert status == 431 and headers["connection"] == "close"
        assert orjson.loads(body)["error_code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
        assert closed_by_server(sock)


def test_headers_just_under_the_limit_are_served(rest_port: int) -> None:
    with connect(rest_port) as sock:
        sock.sendall(post_head(len(BODY), extra="X-Big: " + "a" * 60_000 + "\r\n") + BODY)
        status, _, body = read_response(sock)
    assert status == 200 and orjson.loads(body) == {"predictions": [3.0]}


@pytest.mark.parametrize("sent", [b"", b"POST /model/doubler/champion/invocations HTTP/1.1\r\nHost: t\r\n"])
def test_a_head_that_does_not_arrive_in_time_is_408(sent: bytes) -> None:
    with serving(rest_app(fake_deployment()), HttpSettings(header_timeout_s=0.2)) as port, connect(port) as sock:
        sock.sendall(sent)
        status, headers, body = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert orjson.loads(body)["error_code"] == "REQUEST_TIMEOUT"
        assert closed_by_server(sock)


def test_a_body_that_does_not_arrive_in_time_is_408() -> None:
    with serving(rest_app(fake_deployment()), HttpSettings(body_timeout_s=0.2)) as port, connect(port) as sock:
        sock.sendall(post_head(100) + b'{"data": ')
        status, _, body = read_response(sock)
        assert status == 408 and "body not received within 0.2s" in orjson.loads(body)["message"]
        assert closed_by_server(sock)


def test_keep_alive_requests_still_work(rest_port: int) -> None:
    with connect(rest_port) as sock:
        for _ in range(3):
            sock.sendall(post_head(len(BODY)) + BODY)
            status, headers, _ = read_response(sock)
            assert status == 200 and "connection" not in headers


# ---------------------------------------------------------------- an answer before the body was read


async def answer_at_once(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers without reading the body (as a refusal before reading does)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_small_unread_rest_is_drained_and_the_connection_kept() -> None:
    with serving(answer_at_once) as port, connect(port) as sock:
        sock.sendall(post_head(50_000, "/") + b"x" * 1000)
        status, headers, _ = read_response(sock)
        assert status == 503 and "connection" not in headers
        sock.sendall(b"x" * 49_000 + post_head(0, "/"))  # the rest, then the next request on the same connection
        status, headers, _ = read_response(sock)
        assert status == 503 and "connection" not in headers


def test_a_large_unread_rest_is_drained_then_the_connection_closed() -> None:
    with serving(answer_at_once) as port, connect(port) as sock:
        sock.sendall(post_head(4 * MB, "/") + b"x" * 1000)
        status, _, _ = read_response(sock)
        assert status == 503
        sock.sendall(b"x" * (4 * MB - 1000))  # read and discarded: no reset while the client finishes sending
        assert closed_by_server(sock)


# ---------------------------------------------------------------- a client that goes away


class Gate:
    """A model function that blocks until opened."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.rows: list[float] = []

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rows += feeds["x"].tolist()
        self.entered.set()
        assert self.opened.wait(WAIT_S), "gate never opened"
        return doubler(feeds)


class StatusSeen(logging.Handler):
    """Sets an event when the access log reports a given status."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "status", None) == self.status:
            self.seen.set()


def hooked(dep: Deployment, on_feeds: Callable[[], None]) -> Deployment:
    """Call ``on_feeds`` each time a request's feeds go to the batcher (it is queued in that same loop step)."""
    to_feeds = dep.to_feeds

    def wrapped(columns: Any, n: int) -> Any:
        on_feeds()
        return to_feeds(columns, n)

    dep.to_feeds = wrapped
    return dep


def test_a_client_that_goes_away_has_its_queued_request_dropped() -> None:
    gate = Gate()
    queued = threading.Event()
    calls = [0]

    def on_feeds() -> None:
        calls[0] += 1
        if calls[0] == 2:
            queued.set()

    dep = hooked(fake_deployment(gate, config=BatcherConfig(inline_below_ms=0)), on_feeds)
    access = logging.getLogger("modelport.access")
    seen = StatusSeen(499)
    access.addHandler(seen)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        with serving(rest_app(dep)) as port, connect(port) as first, connect(port) as gone:
            first.sendall(post_head(len(BODY)) + BODY)
            assert gate.entered.wait(WAIT_S)  # running, the runtime is busy
            gone.sendall(post_head(22) + b'{"data": [[7.0, "b"]]}')
            assert queued.wait(WAIT_S)
            gone.close()  # the client goes away while its request waits
            assert seen.seen.wait(WAIT_S)
            stats = dep.batcher.stats
            assert (stats.queue_depth, stats.queued_rows, stats.abandoned) == (0, 0, 1)
            gate.opened.set()
            status, _, body = read_response(first)
            assert status == 200 and orjson.loads(body) == {"predictions": [3.0]}
            first.sendall(post_head(len(BODY)) + BODY)  # the runtime goes on serving
            assert read_response(first)[0] == 200
    finally:
        access.removeHandler(seen)
        access.setLevel(previous)
    assert gate.rows == [1.5, 1.5]  # 7.0 never ran


def test_the_cancellation_stays_inside_the_request() -> None:
    """A request cancelled because its client went away ends quietly: no 'Exception in ASGI application'."""
    gate = Gate()
    queued = threading.Event()
    dep = hooked(fake_deployment(gate), queued.set)
    errors = StatusSeen(-1)
    uvicorn_log = logging.getLogger("uvicorn.error")
    records: list[logging.LogRecord] = []
    errors.emit = records.append  # type: ignore[method-assign]
    uvicorn_log.addHandler(errors)
    try:
        with serving(rest_app(dep)) as port:
            with connect(port) as gone:
                gone.sendall(post_head(len(BODY)) + BODY)
                assert gate.entered.wait(WAIT_S)
            # running (not queued): its result is discarded when the batch ends
            gate.opened.set()
            with connect(port) as sock:
                sock.sendall(post_head(len(BODY)) + BODY)
                assert read_response(sock)[0] == 200
    finally:
        uvicorn_log.removeHandler(errors)
    assert not [r for r in records if r.levelno >= logging.ERROR]


def test_with_limits_keeps_the_protocol() -> None:
    limits = HttpSettings(max_header_bytes=2048)
    protocol = SingleWriteProtocol.with_limits(limits)
    assert issubclass(protocol, SingleWriteProtocol) and protocol.limits is limits
    assert SingleWriteProtocol.limits == HttpSettings()


def test_a_closed_connection_leaves_no_reference_cycle() -> None:
    """Its protocol, parser and buffers are freed when it closes, not at the next full GC (which may be long after an
    overload: the RSS would stay at the peak)."""
    freed = threading.Event()

    class Probe(SingleWriteProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            weakref.finalize(self, freed.set)

    gc.collect()
    gc.disable()
    try:
        with serving(rest_app(fake_deployment()), protocol=Probe) as port:
            with connect(port) as sock:
                sock.sendall(post_head(len(BODY)) + BODY)
                assert read_response(sock)[0] == 200
            assert freed.wait(WAIT_S)
    finally:
        gc.enable()
