"""``modelport serve --ray``: replicas on Ray Serve behind the front (HAProxy) or on the shared port (direct):
autoscaling, scale to zero, replica loss, hot swaps by poll and by webhook, per-model applications, merged metrics.

One local Ray cluster for the module; each test deploys its own applications and runs the driver in a thread.
Ray binds every interface and rewrites 127.0.0.1, so this module runs only in
a loopback-only network namespace (``make test-ray``: ``unshare -n``); elsewhere, and without the ``ray`` extra, it
is skipped with the reason. Waits on cluster state poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.lifecycle import ScorerRegistry, answer, make_registry, version_of
from tests.processes import free_port

if [name for _, name in socket.if_nameindex()] != ["lo"]:
    pytest.skip("Ray tests run in a loopback-only network namespace: make test-ray", allow_module_level=True)
pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install -e '.[ray]')")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until true (cluster state has no event to wait on); the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    import ray
    from ray import serve

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ScorerRegistry:
    return make_registry(tmp_path_factory.mktemp("ray"))


@dataclass
class Load:
    """Threads scoring in a loop until stopped. ``retries``: a connection error is retried on a new connection up to
    this many times (the client's retry, needed without the front when a replica is killed: connections the kernel
    still queues on the dying replica's listener are reset too, so one retry is not always enough)."""

    url: str
    threads: int = 4
    retries: int = 0
    fresh_connections: bool = False
    ok: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    versions: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self) -> None:
        headers = {"Connection": "close"} if self.fresh_connections else {}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                for attempt in range(self.retries + 1):
                    try:
                        r = client.post(self.url, json=answer(), headers=headers)
                    except httpx.TransportError as exc:
                        if attempt < self.retries:
                            self.retried += 1
                            continue
                        self.failures.append(repr(exc))
                        break
                    if r.status_code == 200:
                        self.ok += 1
                        self.versions.append(version_of(r.json()["predictions"][0]))
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                    break

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(30)


@dataclass
class Served:
    """Applications deployed for one test, with the driver (front or direct) running in a thread."""

    settings: Any
    cluster: Any
    driver: Any

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def url(self, model: str, ref: str = "champion") -> str:
        return f"{self.base}/model/{model}/{ref}/invocations"


@contextmanager
def served(
    app: str, registry: ScorerRegistry, *models: str, ingress: str = "front", **options: Any
) -> Iterator[Served]:
    """Deploy ``models`` (names or DeploymentSpecs) as application ``app`` on a free port and run its driver."""
    from server.scaleout import ray_serve
    from server.settings import DeploymentSpec, PromotionSettings, ScaleOutSettings

    scaleout = {"upscale_delay_s": 0.5, "downscale_delay_s": 2.0, "ingress": ingress, **options.pop("scaleout", {})}
    specs = tuple(m if isinstance(m, DeploymentSpec) else DeploymentSpec(model=f"models:/{m}@champion") for m in models)
    settings = registry.settings(
        deployments=specs, port=free_port(), log_level="WARNING", log_format="json",
        scaleout=ScaleOutSettings(**scaleout), promotion=options.pop("promotion", PromotionSettings()), **options,
    )  # fmt: skip
    cluster = ray_serve.deploy(settings, name=app)
    from server.scaleout.keeper import Keeper

    driver = Keeper(cluster)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(driver.run(stop)), daemon=True)
    thread.start()
    try:
        if ingress == "front":
            eventually(lambda: _answers(f"http://127.0.0.1:{settings.port}/ping"), 60, "the front answers /ping")
        yield Served(settings, cluster, driver)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        cluster.delete()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def running(app: str) -> int:
    from server.scaleout.ray_serve import running_replicas

    return running_replicas(app)


def replicas(app: str) -> int:
    """Replicas of the application in any state (a stopping one may still answer its open connections)."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(sum(d.replica_states.values()) for d in status.deployments.values())


def members(s: Served, app: str) -> list[Any]:
    import ray

    return [m for m in ray.get(s.cluster.directory.members.remote()) if m.deployment == app]


def mcp_tools(base: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """initialize, initialized, tools/list over the Streamable HTTP door; the tools/list answer."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **(headers or {})}
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    with httpx.Client(base_url=base, timeout=30) as http:
        r = http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}, headers=headers
        )
        assert r.status_code == 200 and "serverInfo" in r.text
        headers |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        return http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers)


@pytest.mark.parametrize("ingress", ["front", "direct"])
def test_one_replica_serves_rest_databricks_and_mcp(cluster: None, registry: ScorerRegistry, ingress: str) -> None:
    model = registry.register("ray_doors", [3.0])
    with served(f"doors-{ingress}", registry, model, ingress=ingress) as s:
        if ingress == "direct":
            eventually(lambda: _answers(f"{s.base}/ping"), 60, "the replica answers")
        r = httpx.post(s.url(model), json=answer(), timeout=30)
        assert r.status_code == 200 and version_of(r.json()["predictions"][0]) == 3.0
        assert httpx.get(f"{s.base}/api/2.0/serving-endpoints", timeout=30).status_code == 200
        tools = mcp_tools(s.base)
        assert tools.status_code == 200 and model in tools.text
        if ingress == "front":  # /metrics: every replica's, labelled; the front's count of replicas
            metrics = httpx.get(f"{s.base}/metrics", timeout=30).text
            (member,) = members(s, "doors-front")
            assert f'replica="{member.address}"' in metrics and f'model="{model}"' in metrics
            assert 'modelport_replicas{deployment="doors-front"} 1' in metrics


def test_autoscales_one_to_two_under_load_and_back(cluster: None, registry: ScorerRegistry) -> None:
    model = registry.register("ray_scale", [1.0])
    options = {"scaleout": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 0.1}}
    with served("scale", registry, model, **options) as s:
        assert running("scale") == 1
        with Load(s.url(model)) as load:
            up = eventually(lambda: running("scale") == 2, 60, "2 replicas under load")
            eventually(lambda: len(members(s, "scale")) == 2, 30, "the front knows both")
            served_before = load.ok
            eventually(lambda: load.ok > served_before + 20, 30, "load still answered on 2 replicas")
        assert not load.failures, load.failures[:3]
        down = eventually(lambda: running("scale") == 1, 60, "back to 1 replica after the load")
        print(f"scaled up in {up:.1f} s under load, down in {down:.1f} s after it ({load.ok} requests)")


@pytest.mark.parametrize("ingress", ["front", "direct"])
def test_scale_to_zero_and_wake_on_first_request(cluster: None, registry: ScorerRegistry, ingress: str) -> None:
    model = registry.register("ray_zero", [2.0])
    app = f"zero-{ingress}"
    options = {"scaleout": {"min_replicas": 0, "max_replicas": 1, "downscale_delay_s": 1.0}}
    with served(app, registry, model, ingress=ingress, **options) as s:
        eventually(lambda: running(app) == 1, 60, "the initial replica")
        assert httpx.post(s.url(model), json=answer(), timeout=30).status_code == 200  # the initial replica
        eventually(lambda: replicas(app) == 0, 60, "scaled to zero when idle (the last replica gone)")
        if ingress == "direct":
            eventually(lambda: _listening(s.settings.port), 10, "the driver holds the port")
        started = time.monotonic()
        r = httpx.post(s.url(model), json=answer(), timeout=60)
        wake_s = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert version_of(r.json()["predictions"][0]) == 2.0
        eventually(lambda: running(app) == 1, 30, "one replica running after the wake-up")
        if ingress == "direct":
            assert r.headers.get("connection") == "close"  # the next request goes straight to the replica
            eventually(  # the driver releases the port within its next look (0.2 s): then a replica answers directly
                lambda: httpx.post(s.url(model), json=answer(), timeout=30).headers.get("connection") != "close", 10,
                "requests answered by the replica, not the driver",
            )  # fmt: skip
        print(f"{ingress}: woke from zero in {wake_s:.2f} s")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill_one(app: str) -> None:
    import ray

    victim = next(
        a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(f"SERVE_REPLICA::{app}#")
    )
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)


@pytest.mark.parametrize("ingress", ["front", "direct"])
def test_killed_replica_is_replaced_and_no_request_fails(cluster: None, registry: ScorerRegistry, ingress: str) -> None:
    """Behind the front no client retries: the front retries a lost replica's requests on the other one. On the
    shared port (direct) a client's retry on a new connection is what saves them."""
    model = registry.register("ray_kill", [1.0])
    app = f"kill-{ingress}"
    with served(app, registry, model, ingress=ingress, scaleout={"min_replicas": 2, "max_replicas": 2}) as s:
        eventually(lambda: running(app) == 2, 60, "2 replicas")
        if ingress == "front":
            eventually(lambda: len(members(s, app)) == 2, 30, "the front knows both")
        threads = 4 if ingress == "direct" else 16  # behind the front: many requests in flight when the kill lands
        retries = 3 if ingress == "direct" else 0
        with Load(s.url(model), threads, retries=retries, fresh_connections=ingress == "direct") as load:
            eventually(lambda: load.ok > 50, 30, "load flowing")
            _kill_one(app)
            eventually(lambda: running(app) < 2, 30, "the killed replica noticed")
            eventually(lambda: running(app) == 2, 60, "the killed replica replaced")
            served_before = load.ok
            eventually(lambda: load.ok > served_before + 20, 30, "load answered after the replacement")
        assert not load.failures, load.failures[:3]
        moved = ""
        if ingress == "front":
            assert load.retried == 0
            metrics = httpx.get(f"{s.base}/metrics", timeout=30).text
            counters = {k: _sample(metrics, f"modelport_front_{k}_total") for k in ("retries", "redispatches")}
            moved = f", the front retried {counters['retries']:g} and moved {counters['redispatches']:g}"
        print(f"{ingress}: replica killed under load: {load.ok} answered, {load.retried} retried by the client{moved}")


SECRET = "ray-webhook-secret"


def _signed_alias_webhook(name: str, version: str) -> tuple[bytes, dict[str, str]]:
    from server.lifecycle.webhooks import sign

    body = json.dumps(
        {
            "entity": "model_version_alias", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": name, "alias": "champion", "version": version},
        }
    ).encode()  # fmt: skip
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    signature = sign(SECRET, delivery, stamp, body)
    headers = {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp, "X-MLflow-Signature": signature}
    return body, {"Content-Type": "application/json", **headers}


@pytest.mark.parametrize("by", ["poll", "webhook"])
def test_alias_move_rolls_every_replica_without_a_failed_request(
    cluster: None, registry: ScorerRegistry, by: str
) -> None:
    """By poll: each replica finds the move itself. By webhook (polling off): one replica receives it, and the
    directory carries it to the other within a beat."""
    from server.settings import PromotionSettings

    model = registry.register("ray_swap", [1.0, 2.0])
    promotion = (
        PromotionSettings(poll_interval_s=0.5)
        if by == "poll"
        else PromotionSettings(poll_interval_s=0, webhook_secret=SECRET)
    )
    app = f"swap-{by}"
    with served(app, registry, model, scaleout={"min_replicas": 2, "max_replicas": 2}, promotion=promotion) as s:
        eventually(lambda: running(app) == 2, 60, "2 replicas")
        eventually(lambda: len(members(s, app)) == 2, 30, "the front knows both")
        with Load(s.url(model)) as load:
            eventually(lambda: load.ok > 20, 30, "load flowing")
            registry.move(model, "champion", "2")
            moved_at = time.monotonic()
            if by == "webhook":
                body, headers = _signed_alias_webhook(model, "2")
                r = httpx.post(f"{s.base}/webhooks/mlflow", content=body, headers=headers, timeout=30)
                assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
            moved = len(load.versions)
            eventually(lambda: load.versions[-30:].count(2.0) == 30 and len(load.versions) > moved + 30, 60,
                       "every replica answers with version 2")  # fmt: skip
            swap_s = time.monotonic() - moved_at
        assert not load.failures, load.failures[:3]
        assert set(load.versions) == {1.0, 2.0}
        feed = httpx.get(f"{s.base}/dashboard/feed.json", timeout=30).json()  # the dashboard: both replicas at once
        (deployment,) = feed["deployments"]
        assert (feed["replicas"], deployment["replicas"], deployment["version"]) == (2, 2, "2")
        print(f"alias moved ({by}): every replica on version 2 within {swap_s:.2f} s")


def test_a_model_with_its_own_range_gets_its_own_replicas(cluster: None, registry: ScorerRegistry) -> None:
    """``scaleout`` on a deployment: its own Serve application; its scoring routes go there, the rest (listings,
    MCP, other models) to the general application, which serves it too (for MCP)."""
    from server.settings import DeploymentSpec, ReplicaRange

    own = registry.register("ray_own", [4.0])
    other = registry.register("ray_general", [5.0])
    spec = DeploymentSpec(model=f"models:/{own}@champion", scaleout=ReplicaRange(min_replicas=1, max_replicas=1))
    with served("units", registry, spec, other) as s:
        apps = [u.app for u in s.cluster.units]
        assert apps == ["units", f"units-1-{own}"]
        eventually(lambda: len(members(s, apps[1])) == 1 and len(members(s, "units")) == 1, 60, "both registered")
        for _ in range(5):
            assert version_of(httpx.post(s.url(own), json=answer(), timeout=30).json()["predictions"][0]) == 4.0
            assert version_of(httpx.post(s.url(other), json=answer(), timeout=30).json()["predictions"][0]) == 5.0
        (alone,) = members(s, apps[1])
        (general,) = members(s, "units")
        on_own = httpx.get(f"http://{alone.address}/metrics", timeout=30).text
        on_general = httpx.get(f"http://{general.address}/metrics", timeout=30).text
        assert _requests(on_own, own) == 5 and _requests(on_own, other) == 0  # it serves only its model
        assert _requests(on_general, own) == 0 and _requests(on_general, other) == 5
        assert own in mcp_tools(s.base).text  # the general application still has it for MCP


def _requests(metrics: str, model: str) -> float:
    return _sample(metrics, "modelport_requests_total", model=model)


def _sample(metrics: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_a_databricks_endpoint_created_through_one_replica_is_served_by_every_replica(
    cluster: None, registry: ScorerRegistry
) -> None:
    """The replica that handles the create call tells the directory; the others take the endpoint from the shared
    store at their next beat. Deleting it goes the same way."""
    model = registry.register("ray_endpoint", [6.0])
    with served("endpoints", registry, model, scaleout={"min_replicas": 2, "max_replicas": 2}) as s:
        eventually(lambda: len(members(s, "endpoints")) == 2, 60, "2 replicas registered")
        addresses = [m.address for m in members(s, "endpoints")]
        entity = {"entity_name": model, "entity_version": "1"}
        body = {"name": "ray-ep", "config": {"served_entities": [entity]}}
        created = httpx.post(f"{s.base}/api/2.0/serving-endpoints", json=body, timeout=30)
        assert created.status_code == 200, created.text

        def scored_on(address: str) -> int:
            url = f"http://{address}/serving-endpoints/ray-ep/invocations"
            return httpx.post(url, json=answer(), timeout=30).status_code

        for address in addresses:  # each replica on its own address: both serve it
            eventually(lambda a=address: scored_on(a) == 200, 30, f"the endpoint served by {address}")
        # the driver heard it too: the endpoint gets a unit of its own, routed once its replica runs
        unit_app = "endpoints-endpoint-ray-ep"
        eventually(lambda: len(members(s, unit_app)) == 1, 90, "the endpoint's own unit running")
        url = f"{s.base}/serving-endpoints/ray-ep/invocations"

        def routed() -> bool:
            assert httpx.post(url, json=answer(), timeout=30).status_code == 200  # by the general unit until then
            return _counted_on(s, unit_app, "ray-ep") > 0

        eventually(routed, 30, "the front routes the endpoint to its unit")
        before = _counted_on(s, unit_app, "ray-ep")
        answers = [httpx.post(url, json=answer(), timeout=30) for _ in range(20)]
        assert [r.status_code for r in answers] == [200] * 20
        assert {version_of(r.json()["predictions"][0]) for r in answers} == {6.0}
        assert _counted_on(s, unit_app, "ray-ep") == before + 20  # all of them on the endpoint's own replica

        assert httpx.delete(f"{s.base}/api/2.0/serving-endpoints/ray-ep", timeout=30).status_code == 200
        for address in addresses:
            eventually(lambda a=address: scored_on(a) == 404, 30, f"the endpoint gone from {address}")
        eventually(lambda: replicas(unit_app) == 0, 60, "the endpoint's unit removed")
        assert httpx.post(url, json=answer(), timeout=30).status_code == 404


def _counted_on(s: Served, app: str, endpoint: str) -> float:
    """Requests to Databricks endpoint ``endpoint`` counted by the replicas of ``app`` (on their own addresses)."""
    total = 0.0
    for member in members(s, app):
        metrics = httpx.get(f"http://{member.address}/metrics", timeout=30).text
        total += _sample(metrics, "modelport_requests_total", endpoint=endpoint)
    return total


def test_replicas_share_a_rate_limit(cluster: None, registry: ScorerRegistry) -> None:
    """Each of N replicas enforces 1/N of a limit (it learns N from its beat), so behind the front, which spreads
    every request, the application allows about the limit, not N times it."""
    from server.settings import DeploymentSpec, RateLimitSpec

    model = registry.register("ray_limit", [1.0])
    spec = DeploymentSpec(model=f"models:/{model}@champion", rate_limits=(RateLimitSpec(calls=20, key="endpoint"),))
    with served("limits", registry, spec, scaleout={"min_replicas": 2, "max_replicas": 2}) as s:
        eventually(lambda: len(members(s, "limits")) == 2, 60, "2 replicas registered")
        for member in members(s, "limits"):
            metrics = f"http://{member.address}/metrics"
            eventually(
                lambda url=metrics: _sample(httpx.get(url, timeout=30).text, "modelport_rate_limit_share") == 0.5, 30,
                "each replica enforces half",
            )  # fmt: skip
        started = time.monotonic()
        statuses = [httpx.post(s.url(model), json=answer(), timeout=30).status_code for _ in range(40)]
        refilled = (time.monotonic() - started) * 20 / 60  # the two half-buckets refill at 20 calls a minute in all
        assert set(statuses) == {200, 429}
        assert 20 <= statuses.count(200) <= 20 + refilled + 1, (statuses, refilled)  # 10 + 10, not 2 x 20


def test_the_serve_command_on_an_existing_cluster(cluster: None, registry: ScorerRegistry, tmp_path: Path) -> None:
    """``modelport serve --ray ADDRESS`` as a user runs it: the front on the port, replicas on the cluster's nodes
    (their node address), the doors answer, SIGINT removes its applications and leaves the cluster running."""
    import signal
    import subprocess
    import sys

    import ray

    model = registry.register("ray_cli", [7.0])
    port = free_port()
    address = ray.get_runtime_context().gcs_address
    argv = [
        str(Path(sys.executable).parent / "modelport"), "serve", f"models:/{model}@champion", "--ray", address,
        "--port", str(port), "--state-dir", str(registry.root), "--registry-uri", registry.uri,
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "MODELPORT_LOG_FORMAT": "json"}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: process.poll() is None and _answers(f"{base}/ping"), 120, "the front answers /ping")
        r = httpx.post(f"{base}/model/{model}/champion/invocations", json=answer(), timeout=30)
        assert r.status_code == 200 and version_of(r.json()["predictions"][0]) == 7.0
        assert model in mcp_tools(base).text
        assert 'modelport_replicas{deployment="modelport"} 1' in httpx.get(f"{base}/metrics", timeout=30).text
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(90)
    assert code == 0, log.read_text()[-3000:]
    from ray import serve

    assert "modelport" not in serve.status().applications  # its application removed; Serve itself still up
