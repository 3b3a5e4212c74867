"""InferenceService: the one API both doors (REST and MCP) use. Knows no transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from server.decode import ModelInput
from server.deployments import Deployment, DeploymentInfo, DeploymentTable
from server.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    ServerStopping,
    UnsupportedMediaType,
)
from server.prediction import Prediction
from server.tensors import read_arrow_stream

log = logging.getLogger(__name__)

#: Bodies larger than this are decoded in a worker thread so the event loop keeps serving small requests.
_THREAD_DECODE_BYTES = 256 * 1024

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
    """

    def __init__(
        self,
        table: DeploymentTable,
        *,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_tool_rows: int = 100,
        on_demand: OnDemand | None = None,
        exact_aliases: bool = False,
    ) -> None:
        self.table = table
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
        return dep

    async def _alias_deployment(self, name: str, alias: str, fallback: Deployment) -> Deployment:
        assert self.on_demand is not None
        try:
            return await self.on_demand(name, alias, ModelNotFound(f"model '{name}' has no deployment of @{alias}"))
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
    ) -> Prediction:
        """Score already-columnar input (Arrow IPC, v2 tensors): one array per signature column, rows first.

        Arrays are checked and cast against the signature (``Decoder.decode_columns``) without a per-value step
        when their dtype already fits.
        """
        dep = await self.resolve(name, version_or_alias)

        async def decode(d: Deployment) -> ModelInput:
            return d.decoder.decode_columns(columns, params)

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
        return await self.predict_columns(name, version_or_alias, columns)

    async def _serve(
        self,
        dep: Deployment,
        name: str,
        version_or_alias: str | None,
        decode: Callable[[Deployment], Awaitable[ModelInput]],
    ) -> Prediction:
        inputs = await decode(dep)
        try:
            return await self._run(dep, inputs)
        except ServerStopping:
            # Swapped (hot swap) or unloaded (idle, evicted) while this request was on its way to the old
            # batcher: run it once more on what serves that key now. Zero failed requests on a swap.
            successor = await self._successor(dep, name, version_or_alias)
            if successor is None:
                raise
            return await self._run(successor, await decode(successor))

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
            dep.model.name, dep.model.version, predictions, dep.output_kind, label, proba, batch_rows, batch_requests
        )
