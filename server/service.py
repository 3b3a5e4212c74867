"""InferenceService: the one API both doors (REST and MCP) use. Knows no transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from server.decode import ModelInput
from server.deployments import Deployment, DeploymentInfo, DeploymentTable
from server.errors import InvalidInput, ModelNotReady, PayloadTooLarge, UnsupportedMediaType
from server.prediction import Prediction

log = logging.getLogger(__name__)

#: Bodies larger than this are decoded in a worker thread so the event loop keeps serving small requests.
_THREAD_DECODE_BYTES = 256 * 1024


class InferenceService:
    """List, describe and predict over the deployment table.

    Args:
        table: the live deployments.
        max_body_bytes: request body limit (``PayloadTooLarge`` above it).
        max_tool_rows: rows one tool call may score (the MCP ``maxItems``).
    """

    def __init__(
        self, table: DeploymentTable, *, max_body_bytes: int = 16 * 1024 * 1024, max_tool_rows: int = 100
    ) -> None:
        self.table = table
        self.max_body_bytes = max_body_bytes
        self.max_tool_rows = max_tool_rows

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

    async def predict_body(
        self, name: str, version_or_alias: str | None, body: bytes, content_type: str | None
    ) -> Prediction:
        """Score an MLflow scoring request body (JSON or CSV)."""
        dep = self._ready(name, version_or_alias)
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(
                f"request body is {len(body)} bytes; the limit is {self.max_body_bytes}", field="body"
            )
        media = (content_type or "application/json").split(";", 1)[0].strip().lower()
        if media in ("application/json", "application/*+json", ""):
            decode: Callable[[bytes], ModelInput] = dep.decoder.decode_json
        elif media in ("text/csv", "application/csv"):
            decode = dep.decoder.decode_csv
        else:
            raise UnsupportedMediaType(
                f"content type '{media}' is not supported; use application/json or text/csv", field="Content-Type"
            )
        inputs = await asyncio.to_thread(decode, body) if len(body) > _THREAD_DECODE_BYTES else decode(body)
        return await self._run(dep, inputs)

    async def predict_payload(self, name: str, version_or_alias: str | None, payload: Mapping[str, Any]) -> Prediction:
        """Score an already-parsed MLflow scoring payload (e.g. from the Databricks data plane)."""
        dep = self._ready(name, version_or_alias)
        return await self._run(dep, dep.decoder.decode_payload(payload))

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
        dep = self._ready(name, version_or_alias)
        if max_rows is not None and len(records) > max_rows:
            raise PayloadTooLarge(f"{len(records)} rows given; at most {max_rows} per call", field="inputs")
        return await self._run(dep, dep.decoder.decode_records(records, params))

    def _ready(self, name: str, version_or_alias: str | None) -> Deployment:
        dep = self.table.find(name, version_or_alias)
        if dep.state != "READY":
            raise ModelNotReady(f"model '{dep.key}' is {dep.state.lower()}; retry shortly", field="name")
        return dep

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
