"""``GET /dashboard``: one live page of what this process serves, and ``GET /dashboard/feed.json``, the JSON it polls.

The page (``static/dashboard.{html,js,css}`` with uPlot vendored next to them: no build step, no CDN) shows every
deployment and serving endpoint, per-second charts of one group (``all``, ``model:<name>``, ``endpoint:<name>``) from
the observability timeline (``server/ops/timeline.py``), failed loads and the recent lifecycle events (loads, hot
swaps, unloads, failures). The page and its assets are public; the feed needs a valid caller when auth is on and
shows only the models and endpoints that caller may view (``CAN_VIEW``), and the ``all`` group only to callers who
may view every model (an admin or a ``*=CAN_VIEW`` grant, as for ``/metrics``).
"""

from __future__ import annotations

import hashlib
import time
from functools import cache
from importlib.resources import files
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.deployments import DeploymentInfo
from server.errors import ModelNotFound, PermissionDenied
from server.ops.gate import Gate
from server.ops.histogram import LATENCY_MS, delta, quantile
from server.ops.identity import Level, Principal, Resource
from server.ops.observability import Observability
from server.ops.timeline import Group, Timeline
from server.rest.guard import caller

router = APIRouter(tags=["monitoring"])

ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_NOW_S = 5.0
"""The table's "now" figures: rates over the last this many seconds."""
_COST_WINDOW = 10
"""Ticks over which the cost-per-1k chart averages (one tick's cost is too noisy at low traffic)."""
_MAX_EVENTS = 50
EVERYTHING = Resource("model", "*")


@cache
def _asset(name: str) -> tuple[bytes, str]:
    body = (files("server.rest") / "static" / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def _static(request: Request, name: str, media_type: str) -> Response:
    body, etag = _asset(name)
    headers = {**_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/dashboard", include_in_schema=False)
async def page(request: Request) -> Response:
    return _static(request, "dashboard.html", "text/html; charset=utf-8")


@router.get("/dashboard/assets/{name}", include_in_schema=False)
async def asset(name: str, request: Request) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ModelNotFound(f"no dashboard asset '{name}'", field="path")
    return _static(request, name, media_type)


@router.get("/dashboard/feed.json", summary="The dashboard's live data (what the caller may view)")
async def feed(request: Request, group: str | None = None, points: int = 300) -> Response:
    """Deployments, endpoints, failures, recent events and per-second series of ``group`` (default: ``all`` when
    the caller may view everything, else its first model) over the last ``points`` seconds (10..600)."""
    state = request.app.state
    gate: Gate | None = state.gate
    principal = caller(request)
    auth = gate is not None and gate.enabled
    view = _Viewer(gate if auth else None, principal)
    observability: Observability | None = state.observability
    timeline = observability.timeline if observability is not None else None

    deployments = [d for d in state.service.list() if view.model(d.name)]
    endpoints = [e for e in _endpoint_list(request) if view.endpoint(e["name"])]
    failures = {k: r for k, r in sorted(state.service.failures().items()) if view.model(_model_of(k))}
    models = sorted({d.name for d in deployments} | {_model_of(k) for k in failures})
    groups = ["all"] if view.everything() else []
    groups += [f"model:{m}" for m in models] + [f"endpoint:{e['name']}" for e in endpoints]
    if group is None:
        group = groups[0] if groups else None
    elif group not in groups and not view.group(group):
        raise PermissionDenied(f"{_who(principal)} may not view the dashboard group '{group}'", field="group")
    points = max(10, min(600, points))
    charted = timeline if group is not None else None

    costs = timeline.ticks[-1].costs if timeline is not None and timeline.ticks else {}
    out = {
        "now": time.time(),
        "auth": auth,
        "principal": None if principal is None or not auth else principal.name,
        "metrics": timeline is not None,
        "currency": observability.currency if observability is not None else None,
        "cost": timeline is not None and timeline.prices is not None,
        "group": group,
        "groups": groups,
        "current": _now(charted, group or "all"),
        "series": _series(charted, group or "all", points) if charted is not None else None,
        "deployments": [_deployment(d, timeline, costs) for d in deployments],
        "endpoints": [_endpoint(e, timeline) for e in endpoints],
        "failures": [{"key": k, "reason": r} for k, r in failures.items()],
        "events": _events(observability, view),
    }
    body = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


class _Viewer:
    """What the caller may see (everything when auth is off)."""

    def __init__(self, gate: Gate | None, principal: Principal | None) -> None:
        self.gate, self.principal = gate, principal

    def _can(self, resource: Resource) -> bool:
        if self.gate is None:
            return True
        return self.principal is not None and self.gate.can(self.principal, resource, Level.CAN_VIEW)

    def everything(self) -> bool:
        return self._can(EVERYTHING)

    def model(self, name: str) -> bool:
        return self._can(Resource("model", name))

    def endpoint(self, name: str) -> bool:
        return self._can(Resource("endpoint", name))

    def group(self, group: str) -> bool:
        kind, _, name = group.partition(":")
        if kind == "model" and name:
            return self.model(name)
        if kind == "endpoint" and name:
            return self.endpoint(name)
        return group == "all" and self.everything()


def _who(principal: Principal | None) -> str:
    return "the caller" if principal is None else principal.name


def _model_of(key: str) -> str:
    return key.split("@", 1)[0].split("/", 1)[0]


def _endpoint_list(request: Request) -> list[dict[str, Any]]:
    endpoints = getattr(request.app.state, "endpoints", None)
    return [] if endpoints is None else list(endpoints.list())


def _now(timeline: Timeline | None, group: str) -> dict[str, float | None]:
    """Requests per second, p50/p99 latency and error rate of ``group`` over the last few seconds."""
    span = None if timeline is None else timeline.window(_NOW_S)
    if span is None:
        return {"rps": None, "p50_ms": None, "p99_ms": None, "error_rate": None}
    old, new = span
    a, b = old.groups.get(group, Group()), new.groups.get(group, Group())
    n = b.requests - a.requests
    lat = delta(b.latency, a.latency)
    p50, p99 = quantile(LATENCY_MS, lat, 0.5), quantile(LATENCY_MS, lat, 0.99)
    return {
        "rps": round(n / max(1e-9, new.process.wall - old.process.wall), 2),
        "p50_ms": None if p50 is None else round(p50, 3),
        "p99_ms": None if p99 is None else round(p99, 3),
        "error_rate": round((b.c4xx - a.c4xx + b.c5xx - a.c5xx) / n, 4) if n else 0.0,
    }


def _series(timeline: Timeline, group: str, points: int) -> dict[str, list[Any]]:
    """The timeline's per-second series of ``group``, plus cost per 1,000 requests (rolling over a few ticks)."""
    out = timeline.series(group, points)
    ticks = list(timeline.ticks)
    kind, _, name = group.partition(":")
    keys = None
    if kind == "model":
        keys = {k for k, c in timeline.metrics.deployments.items() if c.name == name}
    cost: list[float | None] = []
    attributable = timeline.prices is not None and kind != "endpoint"  # endpoints share deployments
    for i in range(max(1, len(ticks) - points), len(ticks)):
        if not attributable:
            cost.append(None)
            continue
        old, new = ticks[max(0, i - _COST_WINDOW)], ticks[i]
        spent = sum(c.total for k, c in new.costs.items() if keys is None or k in keys)
        spent -= sum(c.total for k, c in old.costs.items() if keys is None or k in keys)
        n = new.groups.get(group, Group()).requests - old.groups.get(group, Group()).requests
        cost.append(round(spent / n * 1000, 6) if n > 0 else None)
    out["cost_per_1k"] = cost[-len(out["t"]) :] if out["t"] else []
    return out


def _deployment(d: DeploymentInfo, timeline: Timeline | None, costs: dict[str, Any]) -> dict[str, Any]:
    life = d.lifecycle
    cost = costs.get(d.key)
    return {
        "key": d.key,
        "name": d.name,
        "version": d.version,
        "aliases": list(d.aliases),
        "runtime": d.runtime,
        "provider": d.provider,
        "state": d.state,
        "reason": d.reason,
        "loaded_at": d.loaded_at,
        "swapped_at": None if life is None else life.swapped_at,
        "previous_version": None if life is None else life.previous_version,
        "pending_version": None if life is None else life.pending_version,
        "last_error": None if life is None else life.last_error,
        "queue_depth": None if d.batching is None else d.batching.queue_depth,
        "cost_per_1k": None if cost is None or cost.per_1k_requests is None else round(cost.per_1k_requests, 6),
        **_now(timeline, f"model:{d.name}"),
    }


def _endpoint(e: dict[str, Any], timeline: Timeline | None) -> dict[str, Any]:
    config = e.get("config") or {}
    return {
        "name": e["name"],
        "ready": e.get("state", {}).get("ready"),
        "config_update": e.get("state", {}).get("config_update"),
        "served": [
            {
                "name": s.get("name"),
                "model": s.get("entity_name"),
                "version": s.get("entity_version"),
                "state": s.get("state", {}).get("deployment"),
            }
            for s in config.get("served_entities", [])
        ],
        "routes": config.get("traffic_config", {}).get("routes", []),
        **_now(timeline, f"endpoint:{e['name']}"),
    }


def _events(observability: Observability | None, view: _Viewer) -> list[dict[str, Any]]:
    """The newest lifecycle events first (loads, hot swaps, unloads, failures) of models the caller may view."""
    if observability is None:
        return []
    out = []
    for event in reversed(observability.metrics.events):
        if view.model(_model_of(event.key)):
            out.append({"at": event.at, "kind": event.kind, "key": event.key, "detail": event.detail})
            if len(out) >= _MAX_EVENTS:
                break
    return out
