"""InferenceService: the one API both doors (REST and MCP) use. Knows no transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from server.columns import field_name, short, show_names
from server.decode import ModelInput
from server.deployments import Deployment, DeploymentInfo, DeploymentTable
from server.errors import (
    InferenceTimeout,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    ServerStopping,
    UnsupportedMediaType,
)
from server.prediction import Prediction
from server.runtime.batcher import Batcher, Slot
from server.runtime.batching import DEADLINE, SLOT
from server.runtime.memory import trim
from server.tensors import read_arrow_stream

log = logging.getLogger(__name__)

#: Bodies larger than this are decoded in a worker thread so the event loop keeps serving small requests.
_THREAD_DECODE_BYTES = 256 * 1024

#: When the bodies held at once reached this much and then none is held, freed memory goes back to the OS.
_TRIM_AFTER_BYTES = 32 * 1024 * 1024

#: Loads a deployment the table does not hold yet: ``(name, version_or_alias, the table's miss) -> deployment``.
OnDemand = Callable[[str, str | None, ModelNotFound], Awaitable[Deployment]]


class InferenceService:
    """List, describe and predict over the deployment table.

    Args:
        table: the live deployments.
        max_body_bytes: request body limit (``PayloadTooLarge`` above it).
        max_tool_rows: rows one tool call may score (the MCP ``maxItems``).
        on_demand: loads versions the table does not hold (``ModelManager.ensure``); ``None``: never.
        exact_aliases: an alias is served by a deployment of that alias only (loaded on demand), never by a version
            deployment that had the alias when it loaded (the alias may have moved since). For ``registry`` policy.
        strict_inputs: refuse columns, params and top-level fields the model does not take (``InvalidInput``).
            Off (the default, as ``mlflow models serve``): they are ignored and named in ``Prediction.ignored``.
            v2 ``infer`` inputs the model does not have are always refused (as Triton does).
    """

    def __init__(
        self,
        table: DeploymentTable,
        *,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_tool_rows: int = 100,
        on_demand: OnDemand | None = None,
        exact_aliases: bool = False,
        strict_inputs: bool = False,
    ) -> None:
        self.table = table
        self.strict_inputs = strict_inputs
        self.max_body_bytes = max_body_bytes
        self.max_tool_rows = max_tool_rows
        self.on_demand = on_demand
        self.exact_aliases = exact_aliases and on_demand is not None

    # -- catalogue ----------------------------------------------------------------------------------------------

    def list(self) -> list[DeploymentInfo]:
        """Every served deployment, sorted by key."""
        return sorted((d.info() for d in self.table.all()), key=lambda i: i.key)

    def describe(self, name: str, version_or_alias: str | None = None) -> DeploymentInfo:
        """One deployment; raises ``ModelNotFound`` naming what is served."""
        return self.table.find(name, version_or_alias).info()

    def failures(self) -> dict[str, str]:
        """Deployments that failed to load: key → reason."""
        return self.table.failures()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever deployments are added, replaced or removed."""
        self.table.subscribe(listener)

    # -- scoring ------------------------------------------------------------------------------------------------

    async def resolve(self, name: str, version_or_alias: str | None) -> Deployment:
        """The ready deployment for ``name`` at that version or alias, loaded on demand when the policy allows.

        Raises:
            ModelNotFound: not served and not loadable (unknown, or refused by the serving policy).
            ModelNotReady: known but not ready, or it failed to load.
            Overloaded: its queue has no room (checked here, before any decoding).
        """
        try:
            dep = self.table.find(name, version_or_alias)
        except ModelNotFound as miss:
            if self.on_demand is None:
                raise
            dep = await self.on_demand(name, version_or_alias, miss)
        else:
            alias = None if version_or_alias is None or version_or_alias.isdigit() else version_or_alias.lstrip("@")
            if self.exact_aliases and alias is not None and dep.ref.alias != alias:
                dep = await self._alias_deployment(name, alias, dep)
        if dep.state != "READY":
            raise ModelNotReady(f"model '{dep.key}' is {dep.state.lower()}; retry shortly", field="name")
        dep.touch()
        dep.batcher.check_room()  # refuse before decoding: a 503 costs no decode
        return dep

    # -- admission (docs/reliability.md "Limits") ------------------------------------------------------------------

    max_inflight_body_bytes: int = 256 * 1024 * 1024
    """Request bodies admitted at once, all models together (``admit``); the entry point sets it from settings."""
    _inflight_bytes: int = 0
    _inflight_peak: int = 0
    _trim_pending: bool = False
    _admitting: dict[tuple[str, str | None], Deployment] | None = None

    def admit(
        self,
        name: str | None,
        version_or_alias: str | None,
        body_bytes: int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Admission:
        """Admit one request before its body is read or decoded (microseconds). A door calls it first, then
        ``await admission.ready()`` when ``admission.waiting``, and ``admission.release()`` when the request ends.

        The declared body is reserved from the in-flight budget (refused at once past it), then room in the model's
        queue: a small body with room now goes straight on (it is read, decoded and queued in this same step, so
        nothing can take the room meanwhile); otherwise a slot is reserved, at once when there is room, else by
        ``ready()`` after waiting for room (the batcher's waiting room: no read, no decode meanwhile;
        ``Overloaded`` after ``max_queue_wait_s``). The slot is the task's ``SLOT``: the request is queued without
        another check when its inputs are decoded.

        Args:
            name: The model (``None``: not known yet; only the body budget is checked).
            version_or_alias: Its version or alias.
            body_bytes: The declared body size (``Content-Length``), when known.
            timeout_s: The client's own deadline for the answer, from now (``X-Request-Timeout-Ms``); it holds for
                the rest of the current task (waiting for room, queued or running past it: ``InferenceTimeout``).

        Raises:
            Overloaded: the body would pass ``max_inflight_body_bytes``, or the waiting room is full.
            InferenceTimeout: ``timeout_s`` is not positive.
        """
        if timeout_s is not None:
            if timeout_s <= 0:
                raise InferenceTimeout("the request's timeout had passed when it arrived", field="timeout")
            DEADLINE.set(asyncio.get_running_loop().time() + timeout_s)
        admission = Admission(self)
        if body_bytes:
            admission.grow(body_bytes)
        if name is None:
            return admission
        found = self._admitting
        if found is None:  # deployments by the (name, version_or_alias) requests name, until the table changes
            found = self._admitting = {}
            self.table.subscribe(found.clear)
        dep = found.get((name, version_or_alias))
        if dep is None:
            try:
                dep = self.table.find(name, version_or_alias)
            except ModelNotFound:
                return admission  # unknown or loadable on demand: the request path answers
            if len(found) >= 1024:
                found.clear()
            found[(name, version_or_alias)] = dep
        if dep.state != "READY":
            return admission
        batcher = dep.batcher
        if body_bytes is not None and body_bytes <= _THREAD_DECODE_BYTES and batcher.has_room():
            return admission  # read, decoded and queued without yielding to another request: no slot needed
        slot = batcher.reserve()
        if slot is None:
            admission.waiting = batcher
        else:
            admission.slot = slot
            SLOT.set(slot)
        return admission

    async def _alias_deployment(self, name: str, alias: str, fallback: Deployment) -> Deployment:
        assert self.on_demand is not None
        try:
            miss = ModelNotFound(f"model '{short(name)}' has no deployment of @{short(alias)}")
            return await self.on_demand(name, alias, miss)
        except ModelNotFound:
            return fallback  # the policy refuses loading it: the version that had the alias answers

    async def predict_body(
        self, name: str, version_or_alias: str | None, body: bytes, content_type: str | None
    ) -> Prediction:
        """Score an MLflow scoring request body (JSON or CSV)."""
        dep = await self.resolve(name, version_or_alias)
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(
                f"request body is {len(body)} bytes; the limit is {self.max_body_bytes}", field="body"
            )
        media = (content_type or "application/json").split(";", 1)[0].strip().lower()
        if media in ("application/json", "application/*+json", ""):
            csv = False
        elif media in ("text/csv", "application/csv"):
            csv = True
        else:
            raise UnsupportedMediaType(
                f"content type '{media}' is not supported; use application/json or text/csv", field="Content-Type"
            )

        async def decode(d: Deployment) -> ModelInput:
            fn = d.decoder.decode_csv if csv else d.decoder.decode_json
            return await asyncio.to_thread(fn, body) if len(body) > _THREAD_DECODE_BYTES else fn(body)

        return await self._serve(dep, name, version_or_alias, decode)

    async def predict_payload(self, name: str, version_or_alias: str | None, payload: Mapping[str, Any]) -> Prediction:
        """Score an already-parsed MLflow scoring payload (e.g. from the Databricks data plane)."""
        dep = await self.resolve(name, version_or_alias)

        async def decode(d: Deployment) -> ModelInput:
            return d.decoder.decode_payload(payload)

        return await self._serve(dep, name, version_or_alias, decode)

    async def predict_records(
        self,
        name: str,
        version_or_alias: str | None,
        records: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any] | None = None,
        *,
        max_rows: int | None = None,
    ) -> Prediction:
        """Score rows given as ``{column: value}`` objects (the MCP tool shape)."""
        dep = await self.resolve(name, version_or_alias)
        if max_rows is not None and len(records) > max_rows:
            raise PayloadTooLarge(f"{len(records)} rows given; at most {max_rows} per call", field="inputs")

        async def decode(d: Deployment) -> ModelInput:
            return d.decoder.decode_records(records, params)

        return await self._serve(dep, name, version_or_alias, decode)

    async def predict_columns(
        self,
        name: str,
        version_or_alias: str | None,
        columns: Mapping[str, np.ndarray],
        params: Mapping[str, Any] | None = None,
        *,
        strict: bool = True,
    ) -> Prediction:
        """Score already-columnar input (Arrow IPC, v2 tensors): one array per signature column, rows first.

        Arrays are checked and cast against the signature (``Decoder.decode_columns``) without a per-value step
        when their dtype already fits. ``strict`` (the default, v2's rule) refuses columns the model does not take;
        otherwise they are ignored as ``strict_inputs`` says.
        """
        dep = await self.resolve(name, version_or_alias)
        strict = strict or self.strict_inputs

        async def decode(d: Deployment) -> ModelInput:
            return d.decoder.decode_columns(columns, params, strict=strict)

        return await self._serve(dep, name, version_or_alias, decode)

    async def predict_arrow(self, name: str, version_or_alias: str | None, body: bytes) -> Prediction:
        """Score an Apache Arrow IPC stream body (``application/vnd.apache.arrow.stream``), one field per column."""
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(
                f"request body is {len(body)} bytes; the limit is {self.max_body_bytes}", field="body"
            )
        if len(body) > _THREAD_DECODE_BYTES:
            columns = await asyncio.to_thread(read_arrow_stream, body)
        else:
            columns = read_arrow_stream(body)
        return await self.predict_columns(name, version_or_alias, columns, strict=self.strict_inputs)

    async def _serve(
        self,
        dep: Deployment,
        name: str,
        version_or_alias: str | None,
        decode: Callable[[Deployment], Awaitable[ModelInput]],
    ) -> Prediction:
        inputs = self._checked(dep, await decode(dep))
        try:
            return await self._run(dep, inputs)
        except ServerStopping:
            # Swapped (hot swap) or unloaded (idle, evicted) while this request was on its way to the old
            # batcher: run it once more on what serves that key now. Zero failed requests on a swap.
            successor = await self._successor(dep, name, version_or_alias)
            if successor is None:
                raise
            return await self._run(successor, self._checked(successor, await decode(successor)))

    def _checked(self, dep: Deployment, inputs: ModelInput) -> ModelInput:
        """Refuse values the runtime's inputs cannot hold and, with ``strict_inputs``, a request that gave anything
        the model does not take."""
        dep.check_inputs(inputs.columns)
        if self.strict_inputs and inputs.ignored:
            raise InvalidInput(
                f"unknown input(s) {show_names(inputs.ignored)} (strict inputs are on); the model takes "
                f"{show_names(dep.signature.input_names)}",
                field=field_name(inputs.ignored[0]),
            )
        return inputs

    async def _successor(self, dep: Deployment, name: str, version_or_alias: str | None) -> Deployment | None:
        current = self.table.get(dep.key)
        if current is dep:
            return None  # the server itself is stopping
        if current is None:
            try:
                current = await self.resolve(name, version_or_alias)
            except ModelNotFound:
                return None
        return None if current is dep else current

    async def _run(self, dep: Deployment, inputs: ModelInput) -> Prediction:
        if inputs.params and dep.run_with_params is None:
            raise InvalidInput(f"model '{dep.key}' takes no params", field="params")
        if inputs.params and dep.run_with_params is not None:
            outputs = await asyncio.to_thread(dep.run_with_params, inputs.columns, inputs.params)
            batch_rows, batch_requests = inputs.rows, 1
        else:
            feeds = dep.to_feeds(inputs.columns, inputs.rows)
            outputs, record = await dep.batcher.submit_traced(feeds)
            batch_rows, batch_requests = record.rows, record.requests
        predictions, label, proba = dep.from_outputs(outputs)
        return Prediction(
            dep.model.name,
            dep.model.version,
            predictions,
            dep.output_kind,
            label,
            proba,
            batch_rows,
            batch_requests,
            inputs.ignored,
        )


class Admission:
    """One admitted request (``InferenceService.admit``): its share of the in-flight body budget and its slot in the
    model's queue, until ``release``."""

    __slots__ = ("_service", "nbytes", "slot", "waiting")

    def __init__(self, service: InferenceService) -> None:
        self._service = service
        self.nbytes = 0
        self.slot: Slot | None = None
        self.waiting: Batcher | None = None
        """The batcher whose room this request must wait for (``ready``) before its body is read."""

    async def ready(self) -> None:
        """Wait for room in the model's queue (no read, no decode meanwhile), when ``admit`` found none.

        Raises:
            Overloaded: no room within ``max_queue_wait_s``, or the waiting room is full.
            InferenceTimeout: the client's deadline passed first.
        """
        batcher = self.waiting
        if batcher is None:
            return
        self.waiting = None
        try:
            slot = await batcher.wait_slot()
        except ServerStopping:
            return  # replaced (hot swap) or unloaded meanwhile: the request path finds what serves the model now
        self.slot = slot
        SLOT.set(slot)

    def grow(self, nbytes: int) -> None:
        """Reserve ``nbytes`` more (a declared body, or the chunks of one without ``Content-Length``).

        Raises:
            Overloaded: that would pass the budget while other bodies are held (a lone body is always taken, so
                one larger than the budget is not refused for good).
        """
        service = self._service
        held = service._inflight_bytes
        if held - self.nbytes > 0 and held + nbytes > service.max_inflight_body_bytes:
            raise Overloaded(
                f"request bodies in flight would pass {service.max_inflight_body_bytes} bytes; retry later"
            )
        service._inflight_bytes = held = held + nbytes
        self.nbytes += nbytes
        if held > service._inflight_peak:
            service._inflight_peak = held

    def release(self) -> None:
        """Give the reservations back (idempotent; a slot the request was queued in is already used)."""
        service = self._service
        service._inflight_bytes -= self.nbytes
        self.nbytes = 0
        if self.slot is not None:
            self.slot.release()
        if not service._inflight_bytes and service._inflight_peak >= _TRIM_AFTER_BYTES and not service._trim_pending:
            _trim_soon(service)

    @property
    def inflight_bytes(self) -> int:
        """The body bytes held by every admitted request right now."""
        return self._service._inflight_bytes


def _trim_soon(service: InferenceService) -> None:
    """A burst of bodies is over: in a second, unless another one started, return the freed heap to the OS (the RSS
    otherwise stays at the burst's peak; ``server/runtime/memory.py``)."""
    loop = asyncio.get_running_loop()
    service._trim_pending = True

    def run() -> None:
        service._trim_pending = False
        if not service._inflight_bytes:
            log.info("a burst of request bodies is over (%d bytes at once): heap trimmed", service._inflight_peak)
            service._inflight_peak = 0
            loop.run_in_executor(None, trim)

    loop.call_later(1.0, run)
