"""``modelport serve --ray``: replicas on Ray Serve, autoscaling, scale to zero, replica loss, hot swap.

One local Ray cluster for the module. Ray binds every interface and rewrites 127.0.0.1, so this module runs only in
a loopback-only network namespace (``make test-ray``: ``unshare -n``); elsewhere, and without the ``ray`` extra, it
is skipped with the reason. Waits on cluster state poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
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
    """Threads scoring in a loop until stopped; each request on a new connection (the kernel balances those),
    retried once on a connection error (a replica killed with the connection open)."""

    url: str
    threads: int = 4
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
        while not self._stop.is_set():
            for attempt in range(2):
                try:
                    r = httpx.post(self.url, json=answer(), headers={"Connection": "close"}, timeout=30)
                except httpx.TransportError as exc:
                    if attempt == 0:
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


def deploy(app: str, registry: ScorerRegistry, model: str, **scaleout: Any) -> tuple[Any, Any, str]:
    """Deploy ``model`` as Serve application ``app`` on a free port: the settings, the plan and the scoring URL."""
    from ray import serve

    from server.scaleout import ray_serve
    from server.scaleout.plan import ReplicaPlan
    from server.settings import ScaleOutSettings

    settings = registry.settings(
        models=(f"models:/{model}@champion",), port=free_port(), log_level="WARNING", log_format="json",
        scaleout=ScaleOutSettings(**{"upscale_delay_s": 0.5, "downscale_delay_s": 2.0, **scaleout}),
    )  # fmt: skip
    plan = ReplicaPlan.from_settings(settings.scaleout)
    handle = serve.run(ray_serve.application(settings, plan), name=app, route_prefix=None)
    return settings, handle, f"http://127.0.0.1:{settings.port}/model/{model}/champion/invocations"


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


def remove(app: str) -> None:
    from ray import serve

    serve.delete(app)


def test_one_replica_serves_rest_databricks_and_mcp(cluster: None, registry: ScorerRegistry) -> None:
    model = registry.register("ray_doors", [3.0])
    settings, _, url = deploy("doors", registry, model)
    base = f"http://127.0.0.1:{settings.port}"
    try:
        r = httpx.post(url, json=answer(), timeout=30)
        assert r.status_code == 200 and version_of(r.json()["predictions"][0]) == 3.0
        assert httpx.get(f"{base}/api/2.0/serving-endpoints", timeout=30).status_code == 200
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        client = {"name": "t", "version": "1"}
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
        with httpx.Client(base_url=base, timeout=30) as http:
            r = http.post("/mcp", json=init, headers=headers)
            assert r.status_code == 200 and "serverInfo" in r.text
            session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            headers |= session
            http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
            tools = http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers)
        assert tools.status_code == 200 and model in tools.text
    finally:
        remove("doors")


def test_autoscales_one_to_two_under_load_and_back(cluster: None, registry: ScorerRegistry) -> None:
    model = registry.register("ray_scale", [1.0])
    _, _, url = deploy("scale", registry, model, min_replicas=1, max_replicas=2, target_ongoing_requests=0.1)
    try:
        assert running("scale") == 1
        with Load(url) as load:
            up = eventually(lambda: running("scale") == 2, 60, "2 replicas under load")
            served = load.ok
            eventually(lambda: load.ok > served + 20, 30, "load still answered on 2 replicas")
        assert not load.failures, load.failures[:3]
        down = eventually(lambda: running("scale") == 1, 60, "back to 1 replica after the load")
        print(f"scaled up in {up:.1f} s under load, down in {down:.1f} s after it ({load.ok} requests)")
    finally:
        remove("scale")


def test_scale_to_zero_and_wake_on_first_request(cluster: None, registry: ScorerRegistry) -> None:
    from server.scaleout import ray_serve
    from server.scaleout.plan import ReplicaPlan

    model = registry.register("ray_zero", [2.0])
    settings, handle, url = deploy("zero", registry, model, min_replicas=0, max_replicas=1, downscale_delay_s=1.0)
    plan = ReplicaPlan.from_settings(settings.scaleout)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    driver = threading.Thread(
        target=lambda: loop.run_until_complete(ray_serve.watch(settings, plan, handle, stop, "zero")), daemon=True
    )
    driver.start()
    try:
        assert httpx.post(url, json=answer(), timeout=30).status_code == 200  # the initial replica
        eventually(lambda: replicas("zero") == 0, 60, "scaled to zero when idle (the last replica gone)")
        eventually(lambda: _listening(settings.port), 10, "the driver holds the port")
        started = time.monotonic()
        r = httpx.post(url, json=answer(), timeout=60)
        wake_s = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert version_of(r.json()["predictions"][0]) == 2.0
        assert r.headers.get("connection") == "close"  # the next request goes straight to the replica
        eventually(lambda: running("zero") == 1, 30, "one replica running after the wake-up")
        eventually(  # the driver releases the port within its next look (0.2 s): then a replica answers directly
            lambda: httpx.post(url, json=answer(), timeout=30).headers.get("connection") != "close", 10,
            "requests answered by the replica, not the driver",
        )  # fmt: skip
        print(f"woke from zero in {wake_s:.2f} s")
    finally:
        loop.call_soon_threadsafe(stop.set)
        driver.join(30)
        remove("zero")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_killed_replica_is_replaced_and_no_request_fails(cluster: None, registry: ScorerRegistry) -> None:
    import ray

    model = registry.register("ray_kill", [1.0])
    _, _, url = deploy("kill", registry, model, min_replicas=2, max_replicas=2)
    try:
        eventually(lambda: running("kill") == 2, 60, "2 replicas")
        with Load(url) as load:
            eventually(lambda: load.ok > 50, 30, "load flowing")
            victim = next(
                a
                for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::kill#")
            )
            ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
            eventually(lambda: running("kill") < 2, 30, "the killed replica noticed")
            eventually(lambda: running("kill") == 2, 60, "the killed replica replaced")
            served = load.ok
            eventually(lambda: load.ok > served + 20, 30, "load answered after the replacement")
        assert not load.failures, load.failures[:3]
        print(f"replica killed under load: {load.ok} answered, {load.retried} retried once, 0 failed")
    finally:
        remove("kill")


def test_alias_move_rolls_every_replica_without_a_failed_request(
    cluster: None, registry: ScorerRegistry, tmp_path: Path
) -> None:
    model = registry.register("ray_swap", [1.0, 2.0])
    from ray import serve

    from server.scaleout import ray_serve
    from server.scaleout.plan import ReplicaPlan
    from server.settings import PromotionSettings, ScaleOutSettings

    settings = registry.settings(
        models=(f"models:/{model}@champion",), port=free_port(), log_level="WARNING", log_format="json",
        scaleout=ScaleOutSettings(min_replicas=2, max_replicas=2), promotion=PromotionSettings(poll_interval_s=0.5),
    )  # fmt: skip
    serve.run(
        ray_serve.application(settings, ReplicaPlan.from_settings(settings.scaleout)), name="swap", route_prefix=None
    )
    url = f"http://127.0.0.1:{settings.port}/model/{model}/champion/invocations"
    try:
        eventually(lambda: running("swap") == 2, 60, "2 replicas")
        with Load(url) as load:
            eventually(lambda: load.ok > 20, 30, "load flowing")
            registry.move(model, "champion", "2")
            moved = len(load.versions)
            eventually(lambda: load.versions[-30:].count(2.0) == 30 and len(load.versions) > moved + 30, 60,
                       "every replica answers with version 2")  # fmt: skip
        assert not load.failures, load.failures[:3]
        assert set(load.versions) == {1.0, 2.0}
    finally:
        remove("swap")
