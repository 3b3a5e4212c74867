"""Databricks-compatible serving endpoints over the model manager: control plane, rollouts and the data plane.

An endpoint names served entities (registry model versions, or aliases as an extension) and a traffic split. A
config change rolls out in the background: ``pending_config`` and ``state.config_update = IN_PROGRESS`` while the
entities load (from the conversion cache when possible), then the config becomes active at once
(``NOT_UPDATING``), or ``UPDATE_FAILED`` with the previous config still serving. Each endpoint owns the deployments
of its entities in the ``ModelManager`` (pinned unless ``scale_to_zero_enabled``), so they share batchers with
``/model/{name}/{version}`` and with the MCP tools. Definitions persist in ``EndpointStore`` and are restored at start.

Security: the creator of an endpoint gets ``CAN_MANAGE`` on it in the ACL store (as on Databricks), and an
endpoint's AI Gateway rate limits go to the gate's ``LimitTable`` (enforced on its data plane); deleting the endpoint
drops both. Who may call what is checked by the doors (``server/rest/guard.py``), not here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from server.databricks.config import EndpointConfig, ServedEntity, check_name, parse_config
from server.databricks.endpoint import Endpoint, States, now_ms
from server.databricks.gateway import AiGateway, parse_ai_gateway, parse_limits, render_rate_limits
from server.databricks.permissions import owner_entry
from server.databricks.routing import TrafficRouter
from server.databricks.store import EndpointStore
from server.deployments import Deployment
from server.errors import AlreadyExists, Conflict, InvalidInput, ModelNotFound, ModelNotReady, ServingError
from server.lifecycle.manager import ModelManager, key_of
from server.ops.acl import AclStore
from server.ops.identity import Principal, Resource
from server.ops.limits import LimitTable
from server.prediction import Prediction
from server.service import InferenceService
from server.settings import CaptureSettings, DeploymentSpec

log = logging.getLogger(__name__)


class CaptureControl(Protocol):
    """Turns an endpoint's inference table on and off (``server/ops/tables.py``)."""

    def enable_endpoint(self, name: str, capture: CaptureSettings | None = None) -> object: ...

    def disable_endpoint(self, name: str) -> None: ...


class EndpointService:
    """CRUD of serving endpoints, their rollouts, and scoring through them.

    Args:
        manager: loads and owns the served entities' deployments.
        service: scores requests (decoding, batching, errors as everywhere else).
        store: where definitions persist.
        limits: where endpoints' AI Gateway rate limits are enforced (the gate's); ``None``: kept, not enforced.
        acl: the gate's ACLs (creators become ``CAN_MANAGE``; deletion drops the endpoint's ACL); ``None``: none.
    """

    def __init__(
        self,
        manager: ModelManager,
        service: InferenceService,
        store: EndpointStore,
        *,
        limits: LimitTable | None = None,
        acl: AclStore | None = None,
        capture: CaptureControl | None = None,
    ) -> None:
        self.manager = manager
        self.service = service
        self.store = store
        self.limits = limits
        self.acl = acl
        self.capture = capture
        self._endpoints: dict[str, Endpoint] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._settled = threading.Condition()
        self.only: frozenset[str] | None = None
        """Restore and follow only these endpoints (a replica serving some endpoints under ``--ray``); ``None``: all."""
        self.listeners: list[Callable[[str], None]] = []
        """Called with an endpoint's name after each change of its definition made here (under ``--ray`` the
        replica tells the others, which ``follow`` it)."""

    # -- control plane ------------------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Load persisted endpoints and roll out their configs (active ones awaited, pending ones in background)."""
        rollouts = []
        for record in self.store.load():
            if self.only is not None and record.get("name") not in self.only:
                continue
            try:
                ep = _restored(record)
            except (KeyError, TypeError, ValueError, ServingError) as exc:
                log.error(
                    "cannot restore a serving endpoint; skipped",
                    extra={"endpoint": record.get("name"), "reason": str(exc)},
                )
                continue
            self._endpoints[ep.name] = ep
            self._apply_limits(ep)
            if ep.config is not None:
                ep.update = "IN_PROGRESS"
                rollouts.append(self._rollout(ep, ep.config))
        await asyncio.gather(*rollouts)
        for ep in self._endpoints.values():
            if ep.pending is not None:
                self._start(ep, ep.pending)
        if self._endpoints:
            log.info("serving endpoints restored", extra={"endpoints": sorted(self._endpoints)})

    async def create(self, body: Mapping[str, Any], creator: Principal | None = None) -> dict[str, Any]:
        """``POST /api/2.0/serving-endpoints``: validate, persist, start the rollout; returns the endpoint.

        ``creator`` (the caller; may it create this name is the door's check) gets ``CAN_MANAGE`` on the endpoint,
        and the endpoint's ACL starts with that entry only.
        """
        if not isinstance(body, Mapping):
            raise InvalidInput("request body must be a JSON object", field="body")
        name = check_name(body.get("name"))
        if name in self._endpoints:
            raise AlreadyExists(f"endpoint '{name}' already exists", field="name")
        config = parse_config(body.get("config"), 1)
        gateway = parse_ai_gateway(body.get("ai_gateway"), "ai_gateway.")
        legacy = parse_limits(body.get("rate_limits"), "rate_limits")
        if legacy and gateway.rate_limits:
            raise InvalidInput("give rate_limits or ai_gateway.rate_limits, not both", field="rate_limits")
        description = body.get("description")
        ep = Endpoint(name, uuid.uuid4().hex, now_ms(), now_ms())
        if description is not None and not isinstance(description, str):
            raise InvalidInput("description must be a string", field="description")
        ep.description = description
        ep.tags = _tags(body.get("tags") or [])
        ep.route_optimized = bool(body.get("route_optimized", False))
        ep.ai_gateway = gateway.with_rate_limits(legacy) if legacy else gateway
        owner = None if creator is None else owner_entry(creator)
        if owner is not None:
            ep.creator = owner.principal
        if self.acl is not None:
            resource = Resource("endpoint", name)
            if owner is not None:
                self.acl.replace(resource, [owner])
            elif self.acl.entries(resource):
                self.acl.drop(resource)  # left over from an endpoint of that name deleted while ACLs were off
        self._endpoints[name] = ep
        self._apply_limits(ep)
        self._start(ep, config)
        log.info("serving endpoint created", extra={"endpoint": name, "served": [e.model_uri for e in config.served]})
        self._changed(name)
        return ep.render()

    def list(self) -> list[dict[str, Any]]:
        """``GET /api/2.0/serving-endpoints``: every endpoint, by name (the door filters by permission)."""
        return [self._refreshed(self._endpoints[n]).render() for n in sorted(self._endpoints)]

    def get(self, name: str, permission_level: str = "CAN_MANAGE") -> dict[str, Any]:
        """``GET /api/2.0/serving-endpoints/{name}``, with the caller's ``permission_level``."""
        return self._refreshed(self._find(name)).render(permission_level)

    def endpoint_id(self, name: str) -> str:
        return self._find(name).id

    async def update_config(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /api/2.0/serving-endpoints/{name}/config``: roll out a new config (refused while one rolls out)."""
        ep = self._find(name)
        if ep.update == "IN_PROGRESS":
            raise Conflict(f"endpoint '{name}' is being updated; wait until config_update is NOT_UPDATING")
        latest = max(c.version for c in (ep.config, ep.pending) if c is not None)
        self._start(ep, parse_config(body, latest + 1))
        log.info("serving endpoint update", extra={"endpoint": name, "config_version": latest + 1})
        self._changed(name)
        return ep.render()

    async def delete(self, name: str) -> None:
        """``DELETE /api/2.0/serving-endpoints/{name}``: stop routing, release its deployments, forget it."""
        await self._remove(self._find(name), persist=True)
        log.info("serving endpoint deleted", extra={"endpoint": name})
        self._changed(name)

    async def follow(self, name: str) -> None:
        """Another process sharing the store changed endpoint ``name``: take its definition as stored now.

        Metadata, AI Gateway and rate limits are taken at once; a config newer than any this process knows is
        rolled out here too (its entities loaded by this process); a deleted endpoint is removed. Nothing is
        written to the store or the ACLs: the process that made the change did.
        """
        if self.only is not None and name not in self.only:
            return
        record = self.store.get(name)
        local = self._endpoints.get(name)
        if record is None:
            if local is not None:
                await self._remove(local, persist=False)
                log.info("serving endpoint deleted elsewhere", extra={"endpoint": name})
            return
        try:
            stored = _restored(record)
        except (KeyError, TypeError, ValueError, ServingError) as exc:
            log.error("cannot follow a serving endpoint", extra={"endpoint": name, "reason": str(exc)})
            return
        newest = max((c for c in (stored.config, stored.pending) if c is not None), key=_version, default=None)
        if local is None:
            local = stored
            local.config = local.pending = None
            self._endpoints[name] = local
        else:
            local.description, local.tags = stored.description, stored.tags
            local.route_optimized, local.ai_gateway = stored.route_optimized, stored.ai_gateway
            local.updated_ms = stored.updated_ms
        self._apply_limits(local)
        running = self._tasks.get(name)
        if running is not None:  # one rollout at a time, as on the process that made the change
            await asyncio.gather(running, return_exceptions=True)
        known = max((c.version for c in (local.config, local.pending) if c is not None), default=0)
        if newest is not None and newest.version > known and self._endpoints.get(name) is local:
            self._start(local, newest, persist=False)
            log.info("serving endpoint changed elsewhere", extra={"endpoint": name, "config_version": newest.version})

    async def _remove(self, ep: Endpoint, *, persist: bool) -> None:
        """Stop routing ``ep``, release its deployments; ``persist``: also from the store and the ACLs."""
        name = ep.name
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        del self._endpoints[name]
        resource = Resource("endpoint", name)
        if persist:
            self.store.delete(name)
            if self.acl is not None:
                self.acl.drop(resource)
        if self.limits is not None:
            self.limits.set(resource, ())
        self._apply_capture(name, None)
        for key in {key_of(e.model_uri) for c in (ep.config, ep.pending) if c is not None for e in c.served}:
            await self.manager.release(key, ep.owner)
        self._notify()

    def _changed(self, name: str) -> None:
        for listener in self.listeners:
            listener(name)

    def patch_tags(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /api/2.0/serving-endpoints/{name}/tags``: ``add_tags`` then ``delete_tags``; returns the tags."""
        ep = self._find(name)
        if not isinstance(body, Mapping):
            raise InvalidInput("request body must be a JSON object", field="body")
        ep.tags.update(_tags(body.get("add_tags") or []))
        deleted = body.get("delete_tags") or []
        if not isinstance(deleted, list) or not all(isinstance(k, str) for k in deleted):
            raise InvalidInput("delete_tags must be a list of tag keys", field="delete_tags")
        for key in deleted:
            ep.tags.pop(key, None)
        ep.updated_ms = now_ms()
        self.store.save(name, ep.record())
        self._changed(name)
        return {"tags": [{"key": k, "value": v} for k, v in sorted(ep.tags.items())]}

    def put_ai_gateway(self, name: str, body: Any) -> dict[str, Any]:
        """``PUT /api/2.0/serving-endpoints/{name}/ai-gateway``: replace the AI Gateway config; returns it."""
        ep = self._find(name)
        ep.ai_gateway = parse_ai_gateway(body)
        self._saved(ep)
        log.info(
            "serving endpoint AI Gateway set",
            extra={"endpoint": name, "rate_limits": render_rate_limits(ep.ai_gateway.rate_limits)},
        )
        return ep.ai_gateway.render()

    def put_rate_limits(self, name: str, body: Any) -> dict[str, Any]:
        """``PUT /api/2.0/serving-endpoints/{name}/rate-limits`` (deprecated by Databricks for AI Gateway): replace
        the rate limits only; returns ``{"rate_limits": [...]}``."""
        ep = self._find(name)
        if not isinstance(body, Mapping):
            raise InvalidInput("request body must be a JSON object with rate_limits", field="body")
        unknown = sorted(set(body) - {"rate_limits"})
        if unknown:
            raise InvalidInput(f"unknown field(s) {unknown}; the body has rate_limits only", field=unknown[0])
        ep.ai_gateway = ep.ai_gateway.with_rate_limits(parse_limits(body.get("rate_limits")))
        self._saved(ep)
        log.info(
            "serving endpoint rate limits set",
            extra={"endpoint": name, "rate_limits": render_rate_limits(ep.ai_gateway.rate_limits)},
        )
        return {"rate_limits": render_rate_limits(ep.ai_gateway.rate_limits)}

    def wait_settled(self, name: str, timeout_s: float = 60.0) -> bool:
        """Block (any thread) until no rollout of ``name`` is in progress; ``False`` on timeout."""
        with self._settled:
            return self._settled.wait_for(lambda: name not in self._tasks, timeout_s)

    async def aclose(self) -> None:
        """Cancel rollouts in progress (server shutdown) and close the store."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.store.close()

    # -- data plane ---------------------------------------------------------------------------------------------

    async def invoke(
        self, name: str, body: bytes, content_type: str | None, served: str | None = None
    ) -> tuple[Prediction, str]:
        """Score a request through the endpoint: by traffic split, or on one served entity when ``served`` is given.

        Returns the prediction and the served entity's name (the ``served-model-name`` header).
        """
        ep = self._find(name)
        config = ep.config
        if config is None or ep.router is None:
            if ep.update == "UPDATE_FAILED":  # nothing will serve until its config is fixed: not worth a retry
                raise Conflict(
                    f"endpoint '{name}' has no ready config: its update failed; fix it with PUT .../config "
                    "(see state.config_update and the served entities' deployment_state_message)",
                    field="name",
                )
            raise ModelNotReady(f"endpoint '{name}' is not ready (config_update {ep.update})", field="name")
        entity = config.entity(served if served is not None else ep.router.pick())
        if entity is None:
            raise ModelNotFound(
                f"endpoint '{name}' has no served model '{served}'; served: {[e.name for e in config.served]}",
                field="served_model_name",
            )
        key = key_of(entity.model_uri)
        if self.manager.table.get(key) is None:  # scaled to zero (or evicted): load it again
            await self.manager.acquire(DeploymentSpec(model=entity.model_uri), ep.owner, pinned=_pinned(config, key))
        if b"usage_context" in body:
            payload = _json(body)
            payload.pop("usage_context", None)
            prediction = await self.service.predict_payload(entity.entity_name, entity.segment, payload)
        else:
            prediction = await self.service.predict_body(entity.entity_name, entity.segment, body, content_type)
        return prediction, entity.name

    # -- rollouts -----------------------------------------------------------------------------------------------

    def _start(self, ep: Endpoint, config: EndpointConfig, *, persist: bool = True) -> None:
        ep.pending, ep.pending_started_ms, ep.update = config, now_ms(), "IN_PROGRESS"
        ep.updated_ms = now_ms()
        if persist:
            self.store.save(ep.name, ep.record())
        rollout = self._rollout(ep, config, persist=persist)
        task = asyncio.get_running_loop().create_task(rollout, name=f"rollout-{ep.name}")
        with self._settled:
            self._tasks[ep.name] = task
        task.add_done_callback(lambda t: self._finished(ep.name, t))

    async def _rollout(self, ep: Endpoint, config: EndpointConfig, *, persist: bool = True) -> None:
        """Load every served entity of ``config``; activate it when all are ready, else keep the old one.

        ``persist``: write the outcome to the store (not when following a change another process made).
        """
        states: States = {e.name: ("DEPLOYMENT_CREATING", f"loading {e.model_uri}") for e in config.served}
        ep.states[config.version] = states
        loads = (self._load(ep, config, e, states) for e in config.served)
        results = await asyncio.gather(*loads, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        restoring = ep.config is config
        if failures:
            for e in config.served:
                if states[e.name][0] == "DEPLOYMENT_READY" and not restoring:
                    states[e.name] = ("DEPLOYMENT_ABORTED", "another served entity of this config failed")
            ep.update, ep.updated_ms = "UPDATE_FAILED", now_ms()
            if restoring:
                ep.healthy = False
                ep.router = TrafficRouter(config.routes)
            else:
                await self._release_unused(ep, config, keep=ep.config)
                if persist:
                    self.store.save(ep.name, {**ep.record(), "pending": None})
            log.error(
                "serving endpoint update failed; the previous config keeps serving",
                extra={"endpoint": ep.name, "config_version": config.version, "reason": str(failures[0])},
            )
            return
        previous = None if restoring else ep.config
        ep.config, ep.healthy, ep.router = config, True, TrafficRouter(config.routes)
        self._apply_capture(ep.name, config)
        if ep.pending is config or ep.pending is None:
            ep.pending, ep.pending_started_ms = None, None
        ep.update, ep.updated_ms = "NOT_UPDATING", now_ms()
        if previous is not None:
            await self._release_unused(ep, previous, keep=config)
            ep.states.pop(previous.version, None)
        if persist:
            self.store.save(ep.name, ep.record())
        log.info("serving endpoint ready", extra={"endpoint": ep.name, "config_version": config.version})

    async def _load(self, ep: Endpoint, config: EndpointConfig, entity: ServedEntity, states: States) -> None:
        spec = DeploymentSpec(model=entity.model_uri)
        try:
            dep = await self.manager.acquire(spec, ep.owner, pinned=_pinned(config, key_of(entity.model_uri)))
        except Exception as exc:
            states[entity.name] = ("DEPLOYMENT_FAILED", getattr(exc, "message", None) or str(exc))
            raise
        states[entity.name] = ("DEPLOYMENT_READY", _serving(dep))

    async def _release_unused(self, ep: Endpoint, config: EndpointConfig, keep: EndpointConfig | None) -> None:
        kept = set() if keep is None else {key_of(e.model_uri) for e in keep.served}
        for key in {key_of(e.model_uri) for e in config.served} - kept:
            await self.manager.release(key, ep.owner)

    def _saved(self, ep: Endpoint) -> None:
        """Persist a changed AI Gateway config and enforce its rate limits."""
        ep.updated_ms = now_ms()
        self.store.save(ep.name, ep.record())
        self._apply_limits(ep)
        self._changed(ep.name)

    def _apply_limits(self, ep: Endpoint) -> None:
        if self.limits is not None:
            self.limits.set(Resource("endpoint", ep.name), ep.ai_gateway.rate_limits)

    def _refreshed(self, ep: Endpoint) -> Endpoint:
        """Bring the active entities' state messages up to date (hot swaps of alias entities, scale-to-zero)."""
        config = ep.config
        states = None if config is None else ep.states.get(config.version)
        if config is None or states is None:
            return ep
        for entity in config.served:
            if states.get(entity.name, ("",))[0] != "DEPLOYMENT_READY":
                continue
            dep = self.manager.table.get(key_of(entity.model_uri))
            states[entity.name] = ("DEPLOYMENT_READY", _serving(dep) if dep is not None else "scaled to zero")
        return ep

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        with self._settled:
            if self._tasks.get(name) is task:
                del self._tasks[name]
            self._settled.notify_all()
        if not task.cancelled() and task.exception() is not None:
            log.error("serving endpoint rollout crashed", exc_info=task.exception(), extra={"endpoint": name})

    def _notify(self) -> None:
        with self._settled:
            self._settled.notify_all()

    def _apply_capture(self, name: str, config: EndpointConfig | None) -> None:
        """Point the endpoint's inference table at its active config's ``auto_capture_config`` (or stop it)."""
        if self.capture is None:
            return
        raw = None if config is None else config.auto_capture
        if raw is None or not raw.get("enabled", True):
            self.capture.disable_endpoint(name)
            return
        self.capture.enable_endpoint(name, CaptureSettings(**{"table_name_prefix": name, **raw}))

    def name_of(self, id_or_name: str) -> str:
        """An endpoint's name from its id (the permissions API's ``serving_endpoint_id``) or its name."""
        if id_or_name in self._endpoints:
            return id_or_name
        for ep in self._endpoints.values():
            if ep.id == id_or_name:
                return ep.name
        raise ModelNotFound(f"no serving endpoint has the id or name '{id_or_name}'", field="serving_endpoint_id")

    def _find(self, name: str) -> Endpoint:
        ep = self._endpoints.get(name)
        if ep is None:
            raise ModelNotFound(f"endpoint '{name}' does not exist; endpoints: {sorted(self._endpoints)}", field="name")
        return ep


def _restored(record: Mapping[str, Any]) -> Endpoint:
    ep = Endpoint(record["name"], record["id"], int(record["created_ms"]), int(record["updated_ms"]))
    ep.description = record.get("description")
    ep.tags = {str(k): str(v) for k, v in (record.get("tags") or {}).items()}
    ep.route_optimized = bool(record.get("route_optimized"))
    ep.creator = str(record.get("creator") or ep.creator)
    ep.ai_gateway = parse_ai_gateway(record.get("ai_gateway")) if record.get("ai_gateway") else AiGateway()
    for key in ("config", "pending"):
        if record.get(key):
            setattr(ep, key, parse_config(record[key], int(record[key].get("config_version", 1))))
    return ep


def _version(config: EndpointConfig) -> int:
    return config.version


def _serving(dep: Deployment) -> str:
    return f"serving {dep.model.name} version {dep.model.version} ({dep.converted.runtime} on {dep.session.provider})"


def _pinned(config: EndpointConfig, key: str) -> bool:
    return any(not e.scale_to_zero_enabled for e in config.served if key_of(e.model_uri) == key)


def _tags(raw: Any) -> dict[str, str]:
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) and isinstance(t.get("key"), str) for t in raw):
        raise InvalidInput("tags must be a list of {key, value} objects", field="tags")
    return {t["key"]: str(t.get("value") or "") for t in raw}


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    return payload
