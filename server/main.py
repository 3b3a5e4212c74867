"""Composition root: settings → registry client → loader → deployments → service → REST + MCP doors.

Nothing else imports this module. ``create_app`` is what uvicorn serves; the CLI calls ``serve``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import uvicorn
from fastapi import FastAPI

from registry import ModelRef
from registry.client import RegistryClient
from server.databricks.endpoints import EndpointService
from server.databricks.store import EndpointStore
from server.deployments import DeploymentTable
from server.lifecycle.loader import ModelLoader, Progress
from server.lifecycle.manager import ModelManager
from server.lifecycle.policy import ServingPolicy
from server.lifecycle.promotion import AliasFollower, one_line
from server.lifecycle.webhooks import WebhookReceiver
from server.ops.acl import AclStore
from server.ops.authdb import AuthDB
from server.ops.gate import Gate
from server.ops.identity import Resource
from server.ops.limits import LimitTable, RateLimit
from server.ops.oauth import JwtVerifier
from server.ops.observability import Observability
from server.ops.tables import InferenceTables
from server.ops.tokens import TokenStore
from server.rest.app import create_rest_app
from server.rest.protocol import SingleWriteProtocol
from server.service import InferenceService
from server.settings import Settings
from tools import McpDoor

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a running modelport process is made of (tests reach in here)."""

    settings: Settings
    table: DeploymentTable
    service: InferenceService
    manager: ModelManager
    app: FastAPI
    door: McpDoor | None = None
    follower: AliasFollower | None = None
    endpoints: EndpointService | None = None
    receiver: WebhookReceiver | None = None
    gate: Gate | None = None
    observability: Observability | None = None


def terminal_progress() -> Progress:
    """Progress lines on a terminal (stderr), log lines otherwise."""
    if sys.stderr.isatty():
        return lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True)
    return lambda msg: log.info(msg)


def build_gate(settings: Settings) -> Gate:
    """Identity, permissions and rate limits from the settings and ``<state_dir>/auth.db``."""
    db = AuthDB(settings.auth_db, refresh_s=settings.auth.refresh_s)
    limits = LimitTable()
    for spec in settings.all_deployments():
        if spec.rate_limits:
            resource = Resource("model", ModelRef.parse(spec.model).name)
            limits.set(resource, [RateLimit(r.calls, r.key, r.renewal_period) for r in spec.rate_limits])
    oauth = settings.auth.oauth
    return Gate(
        enabled=settings.auth_enabled,
        tokens=TokenStore(db),
        acl=AclStore(db),
        limits=limits,
        oauth=JwtVerifier(oauth) if oauth is not None else None,
        required_scopes=oauth.required_scopes if oauth is not None else (),
    )


def build(
    settings: Settings,
    *,
    mcp: bool = True,
    only_endpoints: Collection[str] | None = None,
    progress: Progress | None = None,
) -> Components:
    """Wire one process. Models load in the app's lifespan (so uvicorn answers /ping only once they are ready).

    ``only_endpoints``: restore (and follow) only these persisted Databricks endpoints, none when empty (a replica
    serving one model or one endpoint under ``--ray``); ``None``: all of them.
    """
    table = DeploymentTable()
    gate = build_gate(settings)
    tables = InferenceTables.from_settings(settings)
    observability = Observability.build(settings, table, capture=tables)
    totals = observability.metrics.totals
    totals["modelport_capture_dropped"] = lambda: float(tables.dropped)  # buffer full: the request was not delayed
    totals["modelport_capture_failed"] = lambda: float(tables.failed)  # lost to a failed commit
    totals["modelport_capture_written"] = lambda: float(tables.written)
    observability.metrics.gauges["modelport_capture_buffered"] = lambda: float(tables.buffered)
    registry = RegistryClient(settings.effective_registry_uri, settings.effective_tracking_uri)
    loader = ModelLoader(registry, settings, progress=progress)
    manager = ModelManager(loader, table, policy=ServingPolicy(settings.policy), cache=settings.cache)
    manager.listeners.append(observability.metrics.event)
    service = InferenceService(
        table,
        max_body_bytes=settings.max_body_bytes,
        max_tool_rows=settings.max_tool_rows,
        on_demand=manager.ensure,
        exact_aliases=settings.policy.mode == "registry",
        strict_inputs=settings.strict_inputs,
    )
    service.max_inflight_body_bytes = settings.max_inflight_body_bytes
    follower = AliasFollower(manager, registry, interval_s=settings.promotion.poll_interval_s)
    secret = settings.promotion.webhook_secret
    receiver = WebhookReceiver(
        None if secret is None else secret.get_secret_value(),
        follower.notify,
        tolerance_s=settings.promotion.webhook_tolerance_s,
    )
    endpoints = EndpointService(
        manager, service, EndpointStore(settings.endpoints_db), limits=gate.limits, acl=gate.acl, capture=tables
    )
    if only_endpoints is not None:
        endpoints.only = frozenset(only_endpoints)
    recorder = observability.recorder if settings.observe else None
    door = McpDoor(service, settings, gate=gate, recorder=recorder) if mcp else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if door is not None:
                await stack.enter_async_context(door.lifespan())
            await manager.deploy_all(settings.all_deployments())
            await endpoints.restore()
            background = [
                asyncio.create_task(follower.run(), name="alias-follower"),
                asyncio.create_task(manager.run_reaper(), name="idle-reaper"),
                asyncio.create_task(observability.timeline.run(), name="metrics-timeline"),
            ]
            log.info(
                "serving",
                extra={
                    "models": [d.key for d in service.list()],
                    "failed": service.failures(),
                    "url": f"{'https' if settings.ssl_certfile else 'http'}://{settings.host}:{settings.port}",
                    "auth": "on" if settings.auth_enabled else "off",
                },
            )
            try:
                yield
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await follower.aclose()
                await endpoints.aclose()
                await manager.stop_all()
                await asyncio.to_thread(tables.close)  # uvicorn drained the requests: commit what they left

    app = create_rest_app(
        service,
        lifespan=lifespan,
        version=_version(),
        endpoints=endpoints,
        receiver=receiver,
        gate=gate,
        cors=settings.cors,
        observability=observability if settings.observe else None,
        public_metrics=settings.auth.public_metrics,
    )
    if door is not None:
        door.install(app)  # exactly /mcp (a mount would redirect /mcp → /mcp/)
    return Components(settings, table, service, manager, app, door, follower, endpoints, receiver, gate, observability)


class StartupError(Exception):
    """The process could not be wired (registry URI, state directory...): one line for the operator."""


def serve(settings: Settings, *, progress: Progress | None = None) -> None:
    """Run the server in the foreground until interrupted; ``StartupError`` when it cannot be built."""
    try:
        components = build(settings, progress=progress or terminal_progress())
    except Exception as exc:
        raise StartupError(f"cannot start: {one_line(exc)} (registry {settings.effective_registry_uri})") from exc
    config = uvicorn_config(settings, components.app)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; shutdown (drain) is already done
        log.info("stopped")


def uvicorn_config(settings: Settings, app: Any, *, graceful_shutdown_s: float = 30) -> uvicorn.Config:
    """How every modelport HTTP server runs: our protocol and limits, no uvicorn logging, TLS when configured."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_shutdown_s),
        http=SingleWriteProtocol.with_limits(settings.http),
        ssl_certfile=None if settings.ssl_certfile is None else str(settings.ssl_certfile),
        ssl_keyfile=None if settings.ssl_keyfile is None else str(settings.ssl_keyfile),
    )


def _version() -> str:
    try:
        return version("modelport")
    except PackageNotFoundError:
        return "0+unknown"
