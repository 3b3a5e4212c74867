"""Overload end to end: a real registry model, real onnxruntime, real uvicorn with ``SingleWriteProtocol``, raw
sockets. The runtime is held busy by a gate (so nothing depends on timing): refusals come before any body is read,
requests wait for room without being read, clients that go away are dropped without being computed, and the server
answers the next request at once; the HTTP limits hold on the real server too."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
import uvicorn

from server.deployments import Deployment
from server.rest.protocol import SingleWriteProtocol
from server.settings import BatchingSettings, HttpSettings, Settings
from tests.conftest import DemoRegistry

pytestmark = pytest.mark.integration

WAIT_S = 30.0
PATH = "/model/sales_forecast/champion/invocations"
MB = 1024 * 1024


def body(rows: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    products = ("product_A", "product_B", "product_C")
    data = [[int(rng.integers(2018, 2026)), products[i % 3], float(rng.uniform(0, 500))] for i in range(rows)]
    return orjson.dumps({"dataframe_split": {"columns": ["year", "product", "units"], "data": data}})


def request(payload: bytes, extra: str = "") -> bytes:
    head = f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return (head + extra + "\r\n").encode() + payload


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(rest) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed inside a body"
        rest += chunk
    return int(lines[0].split()[1]), headers, rest


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


class Gate:
    """Wraps the batcher's ``run_batch``: holds every batch until opened, and counts the rows it ran."""

    def __init__(self, run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]) -> None:
        self.run = run
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.rows: list[int] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        self.rows.append(len(next(iter(feeds.values()))))
        self.entered.set()
        assert self.opened.wait(WAIT_S), "gate never opened"
        return self.run(feeds)


class Statuses(logging.Handler):
    """Counts access-log statuses; ``wait(status, n)`` blocks (bounded) until ``n`` were logged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, int] = {}
        self.cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.cond:
            status = getattr(record, "status", 0)
            self.seen[status] = self.seen.get(status, 0) + 1
            self.cond.notify_all()

    def wait(self, status: int, n: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.seen.get(status, 0) >= n, WAIT_S)


@dataclass
class Served:
    port: int
    dep: Deployment
    gate: Gate
    statuses: Statuses


@pytest.fixture
def served(demo_registry: DemoRegistry) -> Iterator[Served]:
    """sales_forecast@champion with a small queue (2 requests) and waiting room (2), over real HTTP."""
    from server.main import build

    ref = next(r for r in demo_registry.refs if r.name == "sales_forecast")
    settings = Settings(
        state_dir=demo_registry.state_dir, registry_uri=demo_registry.tracking_uri, models=(ref.uri,),
        max_body_bytes=MB, batching=BatchingSettings(max_queue_requests=2, max_waiting_requests=2),
        http=HttpSettings(linger_s=2.0),
    )  # fmt: skip
    components = build(settings, mcp=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    protocol = SingleWriteProtocol.with_limits(settings.http)
    config = uvicorn.Config(components.app, http=protocol, lifespan="on", log_config=None, access_log=False)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    access = logging.getLogger("modelport.access")
    statuses = Statuses()
    access.addHandler(statuses)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        with connect(port) as probe:  # blocks until the lifespan has loaded the model
            probe.sendall(request(body(1)))
            assert read_response(probe)[0] == 200
        (dep,) = components.table.all()
        gate = Gate(dep.batcher._run_batch)  # test hook: hold the runtime busy without timing anything
        dep.batcher._run_batch = gate
        yield Served(port, dep, gate, statuses)
    finally:
        access.removeHandler(statuses)
        access.setLevel(previous)
        server.should_exit = True
        thread.join(timeout=WAIT_S)


class Counter:
    """Counts calls made on the server's loop; ``wait(n)`` blocks (bounded) until there were ``n``."""

    def __init__(self) -> None:
        self.n = 0
        self.cond = threading.Condition()

    def hit(self) -> None:
        with self.cond:
            self.n += 1
            self.cond.notify_all()

    def wait(self, n: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.n >= n, WAIT_S)


def watch(dep: Deployment) -> tuple[Counter, Counter]:
    """Counters of requests queued (their feeds go to the batcher in the same loop step) and of requests that start
    waiting for room (``wait_slot`` registers them before its first await)."""
    queued, waiting = Counter(), Counter()
    to_feeds, wait_slot = dep.to_feeds, dep.batcher.wait_slot

    def counted_feeds(columns: Any, n: int) -> Any:
        queued.hit()
        return to_feeds(columns, n)

    async def counted_wait() -> Any:
        waiting.hit()
        return await wait_slot()

    dep.to_feeds = counted_feeds
    dep.batcher.wait_slot = counted_wait  # type: ignore[method-assign]
    return queued, waiting


def test_overload_refuses_cheaply_drops_gone_clients_and_recovers_at_once(served: Served) -> None:
    big = body(1024)
    queued_hits, waiting_hits = watch(served.dep)
    running = connect(served.port)
    running.sendall(request(big))
    assert served.gate.entered.wait(WAIT_S)  # the runtime is busy with it
    before = served.dep.batcher.stats
    queued = [connect(served.port) for _ in range(2)]
    for i, sock in enumerate(queued):
        sock.sendall(request(body(1024, seed=i + 1)))
    assert queued_hits.wait(3)
    waiting = [connect(served.port) for _ in range(2)]
    for sock in waiting:
        sock.sendall(request(big))
    assert waiting_hits.wait(2)
    stats = served.dep.batcher.stats
    assert (stats.queue_depth, stats.waiting) == (2, 2)

    # Queue and waiting room full: the next request is refused at once, before its 1,024 rows are read or decoded.
    with connect(served.port) as refused:
        started = time.perf_counter()
        refused.sendall(request(big))
        status, headers, payload = read_response(refused)
        refused_ms = (time.perf_counter() - started) * 1e3
    assert status == 503 and headers["retry-after"] == "1", payload
    assert "2 requests waiting for room" in orjson.loads(payload)["message"]
    assert refused_ms < 1000  # typically well under a millisecond; the bound only keeps a loaded CI green

    # Every client but the running one goes away: the queued and waiting requests are dropped, never computed.
    for sock in queued + waiting:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        sock.close()
    assert served.statuses.wait(499, 4)
    after = served.dep.batcher.stats
    assert (after.queue_depth, after.waiting, after.reserved) == (0, 0, 0)
    assert after.abandoned - before.abandoned >= 2  # the waiting ones too, if room reached them before their reset

    served.gate.opened.set()
    status, _, payload = read_response(running)
    running.close()
    assert status == 200 and len(orjson.loads(payload)["predictions"]) == 1024
    assert served.gate.rows == [1024]  # nothing ran for the clients that had gone

    with connect(served.port) as sock:  # recovery: the next request is answered at once
        started = time.perf_counter()
        sock.sendall(request(body(1)))
        status, _, _ = read_response(sock)
        next_ms = (time.perf_counter() - started) * 1e3
    assert status == 200 and served.gate.rows == [1024, 1]
    assert next_ms < 1000  # ~1 ms here; what matters above is that no stale work ran before it


def test_a_waiting_request_is_served_when_room_frees(served: Served) -> None:
    first = connect(served.port)
    first.sendall(request(body(1024)))
    assert served.gate.entered.wait(WAIT_S)
    later = [connect(served.port) for _ in range(4)]  # 2 queued, 2 waiting (unread)
    for i, sock in enumerate(later):
        sock.sendall(request(body(8, seed=i)))
    served.gate.opened.set()
    for sock in [first, *later]:
        status, _, payload = read_response(sock)
        assert status == 200, payload
        sock.close()
    assert served.dep.batcher.stats.refused == 0


def test_the_clients_deadline_header(served: Served) -> None:
    first = connect(served.port)
    first.sendall(request(body(1)))
    assert served.gate.entered.wait(WAIT_S)
    with connect(served.port) as sock:
        sock.sendall(request(body(1), "X-Request-Timeout-Ms: 100\r\n"))
        status, _, payload = read_response(sock)
    assert status == 504 and orjson.loads(payload)["error_code"] == "DEADLINE_EXCEEDED"
    served.gate.opened.set()
    assert read_response(first)[0] == 200
    first.close()
    assert served.gate.rows == [1]


def test_http_limits_on_the_real_server(served: Served) -> None:
    served.gate.opened.set()
    with connect(served.port) as sock:  # a 4 MB header: 431, the rest discarded, no reset
        sender = threading.Thread(target=sock.sendall, args=(request(body(1), "X-Big: " + "a" * (4 * MB) + "\r\n"),))
        sender.start()
        status, headers, payload = read_response(sock)
        sender.join(WAIT_S)
    assert status == 431 and headers["connection"] == "close"
    assert orjson.loads(payload)["error_code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
    url = f"http://127.0.0.1:{served.port}{PATH}"
    oversized = urllib.request.Request(url, data=b"x" * (16 * MB), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:  # urllib sends it all before reading: it sees the 413
        urllib.request.urlopen(oversized, timeout=WAIT_S)
    assert info.value.code == 413
