"""``modelport serve --ray [ADDRESS]``: the server's units as Ray Serve applications (the only module importing
``ray``; the ``ray`` extra installs it).

Each replica is a ``ReplicaServer`` (modelport's whole app); Serve places the replicas (``ray_actor_options``: CPUs,
fractional GPUs), checks their health, replaces dead ones, rolls them on a redeploy and scales them between
``min_replicas`` and ``max_replicas`` with ``server.scaleout.policy`` on the ``ongoing`` requests each replica
reports (``record_autoscaling_stats``). Serve's HTTP proxy is off: requests never cross Ray.

What runs as which application is ``server.scaleout.units``. Replicas register in a ``Directory`` actor and beat
every 0.5 s; a beat brings back what other replicas published (a registry webhook, a Databricks endpoint change)
and how many replicas share the application (its share of the rate limits). The driver (this process) runs
``server.scaleout.keeper.Keeper`` over ``RayCluster``: the front, or with ``ingress: direct`` the shared port while
no replica runs.
"""

import asyncio
import contextlib
import logging
import os
import signal
import threading
from typing import Any

from server.scaleout.directory import BEAT_S, Directory, Event, Member
from server.scaleout.keeper import Keeper
from server.scaleout.replica import ReplicaServer, Response
from server.scaleout.units import Unit, units
from server.settings import Settings

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # after the usage-stats opt-out above
from ray import serve

log = logging.getLogger(__name__)

APP = "modelport"
DEPLOYMENT = "modelport"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=1000, health_check_period_s=2.0, health_check_timeout_s=10.0)
class ModelportReplica:
    """One replica: modelport's app on the shared port or a port of its own, from a thread of this Ray actor."""

    def __init__(
        self,
        settings: Settings,
        graceful_shutdown_s: float,
        directory: Any,
        listen: str | None,
        endpoints: tuple[str, ...] | None,
    ) -> None:
        from server.logging import configure_logging

        configure_logging(settings.log_format, settings.log_level)
        if listen == "":  # behind the front on another node: this node's address
            listen = ray.util.get_node_ip_address()
        self.server = ReplicaServer(
            settings, graceful_shutdown_s=graceful_shutdown_s, listen=listen, endpoints=endpoints
        )
        self.server.start()
        context = serve.get_replica_context()
        host = listen if listen is not None else settings.host
        self.member = Member(context.app_name, context.replica_tag, host, self.server.port)
        self.directory = directory
        # behind the front every request is balanced, so the replicas share each rate limit; on the shared port a
        # connection stays on one replica, which then enforces the whole limit
        self.beat = Beat(directory, self.member, self.server, shares_limits=listen is not None)
        publish = directory.publish.remote
        receiver = self.server.components.receiver
        if receiver is not None:  # a webhook this replica receives reaches the others at their next beat
            receiver.relays.append(lambda name: publish("alias", name, self.member.replica))
        service = self.server.components.endpoints
        if service is not None:  # so does a Databricks endpoint created or changed here (and the driver hears it)
            service.listeners.append(lambda name: publish("endpoint", name, self.member.replica))

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
        beat = getattr(self, "beat", None)
        if beat is not None:
            beat.stop()
            with contextlib.suppress(Exception):  # out of the front before it stops listening
                ray.get(self.directory.leave.remote(self.member.replica), timeout=2)
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()  # stop accepting, finish open requests within graceful_shutdown_s


class Beat:
    """A replica's beat to the directory (a thread): keeps it in the front, and brings the others' events."""

    def __init__(self, directory: Any, member: Member, server: ReplicaServer, *, shares_limits: bool) -> None:
        self.directory, self.member, self.server = directory, member, server
        self.shares_limits = shares_limits
        self._stop = threading.Event()
        self.after: int = ray.get(directory.register.remote(member), timeout=30)
        self._thread = threading.Thread(target=self._run, name="modelport-beat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self.after, events, peers = ray.get(self.directory.beat.remote(self.member, self.after), timeout=5)
            except Exception as exc:  # the directory is away (driver restarting): beat again later
                log.warning("replica beat failed: %s", exc)
                continue
            if self.shares_limits:
                self.server.share_limits(peers)
            for kind, subject, _ in events:
                if kind == "alias":
                    self.server.notify_alias(subject)
                elif kind == "endpoint":  # ignored by a replica not serving it (EndpointService.only)
                    self.server.follow_endpoint(subject)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def application(unit: Unit, directory: Any, listen: str | None) -> Any:
    """The Serve application of one unit: one deployment, its replicas sized and autoscaled by the unit's plan."""
    deployment: Any = ModelportReplica  # a serve.Deployment (the decorator's type is lost to mypy)
    plan = unit.plan
    return deployment.options(
        autoscaling_config=plan.autoscaling_config(),
        ray_actor_options=plan.actor_options(),
        graceful_shutdown_timeout_s=plan.graceful_shutdown_s + 5,
        graceful_shutdown_wait_loop_s=0.5,
    ).bind(unit.settings, plan.graceful_shutdown_s, directory, listen, unit.endpoints)


def running_replicas(name: str = APP) -> int:
    """Replicas of the application's deployment in state RUNNING."""
    app = serve.status().applications.get(name)
    if app is None or DEPLOYMENT not in app.deployments:
        return 0
    states: dict[Any, int] = dict(app.deployments[DEPLOYMENT].replica_states)
    return int(states.get("RUNNING", 0))


class RayCluster:
    """The units deployed on Ray Serve, as the keeper sees them (``server.scaleout.keeper.Cluster``)."""

    def __init__(self, settings: Settings, name: str, directory: Any, listen: str | None) -> None:
        self.settings = settings
        self.name = name
        self.directory = directory
        self.listen = listen
        self.units: list[Unit] = []
        self.handles: dict[str, Any] = {}

    def deploy(self, unit: Unit) -> None:
        """Deploy (or update) a unit's application; returns once its replicas run (``units`` is the caller's)."""
        app = application(unit, self.directory, self.listen)
        self.handles[unit.app] = serve.run(app, name=unit.app, route_prefix=None)

    async def add(self, unit: Unit) -> None:
        await asyncio.to_thread(self.deploy, unit)

    async def remove(self, unit: Unit) -> None:
        await asyncio.to_thread(serve.delete, unit.app)
        self.handles.pop(unit.app, None)

    async def members(self) -> list[Member]:
        return await self.directory.members.remote()  # type: ignore[no-any-return]

    async def events(self, after: int) -> tuple[int, list[Event]]:
        return await self.directory.events.remote(after)  # type: ignore[no-any-return]

    async def running(self, app: str) -> int:
        return await asyncio.to_thread(running_replicas, app)

    async def forward(
        self, app: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        return await self.handles[app].forward.remote(method, path, headers, body)  # type: ignore[no-any-return]

    def delete(self) -> None:
        for unit in self.units:
            serve.delete(unit.app)


def deploy(settings: Settings, address: str | None = None, name: str = APP) -> RayCluster:
    """Deploy every unit (Ray and Serve must be running); replicas listen behind the front or on the shared port."""
    directory = (
        ray.remote(num_cpus=0)(Directory)
        .options(name=f"{name}-directory", namespace="modelport", get_if_exists=True)
        .remote()
    )
    listen = None
    if settings.scaleout.ingress == "front":
        listen = "127.0.0.1" if address is None else ""  # local Ray: one node, the front's; else each node's
    cluster = RayCluster(settings, name, directory, listen)
    for unit in units(settings, name):
        cluster.deploy(unit)
        cluster.units.append(unit)
    return cluster


def start(settings: Settings, address: str | None, name: str = APP) -> RayCluster:
    """Connect to (or start) Ray, start Serve without its proxy, deploy every unit."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    serve.start(proxy_location="Disabled")
    cluster = deploy(settings, address, name)
    log.info(
        "serving with Ray Serve",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "ingress": settings.scaleout.ingress,
            "units": {u.app: f"{u.plan.min_replicas}-{u.plan.max_replicas}" for u in cluster.units},
            "ray": address or "local",
        },
    )
    return cluster


def serve_forever(settings: Settings, address: str | None) -> None:
    """``modelport serve --ray``: deploy, keep the front until SIGINT/SIGTERM, then remove the replicas (they drain)."""
    cluster = start(settings, address)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Keeper(cluster).run(stop)

    try:
        asyncio.run(main())
    finally:
        cluster.delete()
        if address is None:
            serve.shutdown()
            ray.shutdown()
        log.info("stopped")
