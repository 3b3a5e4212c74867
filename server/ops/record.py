"""The last step of the request pipeline: every door reports each answered request once, here.

``Recorder.record`` is called with the request's ``state`` (what the door and the handlers noted: request id, model,
version, rows, batch size, principal, endpoint, ...) when the response has gone out. It updates the metrics (plain
counters on the event loop, ~0.3 µs) and, only for deployments or endpoints whose capture is on, hands an
``Exchange`` to the inference tables' bounded buffer (never blocks, never fails a request).

State keys a door may set (all optional): ``request_id``, ``model``, ``version``, ``alias``, ``endpoint``,
``served_entity``, ``rows``, ``batch_rows``, ``batch_requests``, ``principal``, ``client_request_id``, ``error``,
``body`` (request bytes), ``response`` (response bytes), ``content_type``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

Door = str
"""``rest`` (MLflow routes, Arrow), ``v2``, ``databricks``, ``mcp``."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One answered request, as inference tables store it."""

    door: Door
    request_id: str
    timestamp: float
    """Wall-clock epoch seconds when the request arrived."""
    latency_s: float
    status: int
    model: str | None
    version: str | None
    alias: str | None
    endpoint: str | None
    served_entity: str | None
    principal: str | None
    client_request_id: str | None
    rows: int
    request: bytes | None
    response: bytes | None
    content_type: str | None
    error: str | None


class MetricsSink(Protocol):
    def observe(self, door: Door, state: dict[str, Any], status: int, latency_s: float) -> None: ...


class CaptureSink(Protocol):
    def wants(self, model: str | None, endpoint: str | None) -> bool:
        """Whether requests of this model / endpoint are captured (cheap: a dict lookup)."""
        ...

    def capture(self, exchange: Exchange) -> None:
        """Enqueue; never blocks (a full buffer drops and counts)."""
        ...


class Recorder:
    """Fans one answered request out to the metrics and, when wanted, the inference tables."""

    def __init__(self, metrics: MetricsSink | None = None, capture: CaptureSink | None = None) -> None:
        self.metrics = metrics
        self.capture = capture

    def record(self, door: Door, state: dict[str, Any], status: int, started: float) -> None:
        """``started`` is the ``time.perf_counter()`` at arrival."""
        latency = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe(door, state, status, latency)
        capture = self.capture
        if capture is not None and capture.wants(state.get("model"), state.get("endpoint")):
            capture.capture(exchange_of(door, state, status, latency))


def exchange_of(door: Door, state: dict[str, Any], status: int, latency_s: float) -> Exchange:
    return Exchange(
        door=door,
        request_id=str(state.get("request_id", "")),
        timestamp=time.time() - latency_s,
        latency_s=latency_s,
        status=status,
        model=state.get("model"),
        version=None if state.get("version") is None else str(state.get("version")),
        alias=state.get("alias"),
        endpoint=state.get("endpoint"),
        served_entity=state.get("served_entity"),
        principal=state.get("principal"),
        client_request_id=state.get("client_request_id"),
        rows=int(state.get("rows") or 0),
        request=state.get("body"),
        response=state.get("response"),
        content_type=state.get("content_type"),
        error=state.get("error"),
    )
