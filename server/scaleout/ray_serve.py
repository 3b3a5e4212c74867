"""``modelport serve --ray [ADDRESS]``: the server's replicas as one Ray Serve deployment (the only module importing
``ray``; the ``ray`` extra installs it).

Each replica is ``ReplicaServer`` (modelport's whole app on the shared port with ``SO_REUSEPORT``); Serve places the
replicas (``ray_actor_options``: CPUs, fractional GPUs), checks their health, replaces dead ones, rolls them on a
redeploy and scales them between ``min_replicas`` and ``max_replicas`` with ``server.scaleout.policy`` on the
``ongoing`` requests each replica reports (``record_autoscaling_stats``). Serve's HTTP proxy is off: requests never
cross Ray. The driver process (this one) only watches; with ``min_replicas: 0`` it holds the port while no replica
runs (``server.scaleout.wake``).
"""

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from server.scaleout.plan import ReplicaPlan, databricks_entities
from server.scaleout.replica import ReplicaServer, Response
from server.scaleout.wake import WakeListener
from server.settings import Settings

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # after the usage-stats opt-out above
from ray import serve

log = logging.getLogger(__name__)

APP = "modelport"
DEPLOYMENT = "modelport"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=1000, health_check_period_s=2.0, health_check_timeout_s=10.0)
class ModelportReplica:
    """One replica: modelport's app serving the shared port from a thread of this Ray actor."""

    def __init__(self, settings: Settings, graceful_shutdown_s: float) -> None:
        from server.logging import configure_logging

        configure_logging(settings.log_format, settings.log_level)
        self.server = ReplicaServer(settings, graceful_shutdown_s=graceful_shutdown_s)
        self.server.start()

    def record_autoscaling_stats(self) -> dict[str, float]:
        return self.server.stats()

    def check_health(self) -> None:
        if not self.server.alive:
            raise RuntimeError("the replica's HTTP server stopped")

    async def forward(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        """Answer a request the driver held while no replica ran."""
        return await self.server.call(method, path, headers, body)

    def served(self) -> list[str]:
        return [f"{d.key}:{d.version}" for d in self.server.components.service.list()]

    def __del__(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()  # stop accepting, finish open requests within graceful_shutdown_s


def replica_settings(settings: Settings, plan: ReplicaPlan) -> Settings:
    """What each replica runs with: absolute paths (Ray workers have their own cwd), ORT threads = its CPUs."""
    update: dict[str, Any] = {"state_dir": Path(settings.state_dir).resolve()}
    for key in ("ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, key)
        if value is not None:
            update[key] = Path(value).resolve()
    if settings.intra_op_threads is None and plan.num_cpus >= 1:
        update["intra_op_threads"] = int(plan.num_cpus)
    return settings.model_copy(update=update)


def application(settings: Settings, plan: ReplicaPlan) -> Any:
    """The Serve application: one deployment, its replicas sized and autoscaled by ``plan``."""
    deployment: Any = ModelportReplica  # a serve.Deployment (the decorator's type is lost to mypy)
    return deployment.options(
        autoscaling_config=plan.autoscaling_config(),
        ray_actor_options=plan.actor_options(),
        graceful_shutdown_timeout_s=plan.graceful_shutdown_s + 5,
        graceful_shutdown_wait_loop_s=0.5,
    ).bind(replica_settings(settings, plan), plan.graceful_shutdown_s)


def running_replicas(name: str = APP) -> int:
    """Replicas of the application's deployment in state RUNNING (listening on the shared port)."""
    app = serve.status().applications.get(name)
    if app is None or DEPLOYMENT not in app.deployments:
        return 0
    states: dict[Any, int] = dict(app.deployments[DEPLOYMENT].replica_states)
    return int(states.get("RUNNING", 0))


def start(settings: Settings, address: str | None, name: str = APP) -> tuple[Any, ReplicaPlan]:
    """Connect to (or start) Ray, start Serve without its proxy, deploy; the handle and the plan."""
    plan = ReplicaPlan.from_settings(settings.scaleout).widened(databricks_entities(settings))
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    serve.start(proxy_location="Disabled")
    handle = serve.run(application(settings, plan), name=name, route_prefix=None)
    log.info(
        "serving with Ray Serve",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "replicas": f"{plan.min_replicas}-{plan.max_replicas}",
            "ray": address or "local",
        },
    )
    return handle, plan


async def watch(settings: Settings, plan: ReplicaPlan, handle: Any, stop: asyncio.Event, name: str = APP) -> None:
    """Until ``stop``: with ``min_replicas: 0``, hold the port while no replica runs, release it once one does."""
    if plan.min_replicas > 0:
        await stop.wait()
        return

    async def forward(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        return await handle.forward.remote(method, path, headers, body)  # type: ignore[no-any-return]

    wake = WakeListener(settings, forward)
    try:
        while not stop.is_set():
            running = await asyncio.to_thread(running_replicas, name)
            if running == 0:
                await wake.open()
            elif wake.listening:
                await wake.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await wake.close()


def serve_forever(settings: Settings, address: str | None) -> None:
    """``modelport serve --ray``: deploy, watch until SIGINT/SIGTERM, then remove the replicas (they drain)."""
    handle, plan = start(settings, address)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await watch(settings, plan, handle, stop)

    try:
        asyncio.run(main())
    finally:
        serve.delete(APP)
        if address is None:
            serve.shutdown()
            ray.shutdown()
        log.info("stopped")
