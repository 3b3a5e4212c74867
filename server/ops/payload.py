"""The rows of an inference table: Databricks' payload table schema, and answered requests turned into Arrow.

Columns and types are those of Databricks' (legacy, ``auto_capture_config``) inference tables, so queries written
for those run here unchanged; ``request_metadata`` carries modelport's own keys besides Databricks'
(``endpoint_name``, ``model_name``, ``model_version``). docs/observability.md lists them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from server.ops.record import Exchange

PARTITION = "date"
SCHEMA = pa.schema(
    [
        pa.field("client_request_id", pa.string()),
        pa.field("databricks_request_id", pa.string()),
        pa.field("date", pa.date32()),
        pa.field("timestamp_ms", pa.int64()),
        pa.field("status_code", pa.int32()),
        pa.field("execution_time_ms", pa.int64()),
        pa.field("sampling_fraction", pa.float64()),
        pa.field("request", pa.string()),
        pa.field("response", pa.string()),
        pa.field("request_metadata", pa.map_(pa.string(), pa.string())),
    ]
)
"""``date`` (UTC day of arrival) is the partition column."""

SUFFIX = "_payload"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one model's or endpoint's captured requests go, and how they are sampled and clipped."""

    name: str
    """``catalog.schema.prefix_payload``, as Databricks would name the table."""
    path: Path
    sampling_fraction: float
    max_payload_bytes: int


@dataclass(frozen=True, slots=True)
class Pending:
    """One captured request waiting for the writer; bodies already clipped to the target's size cap."""

    target: Target
    exchange: Exchange
    request: bytes | None
    response: bytes | None


def default_prefix(name: str) -> str:
    """A model or endpoint name as a table name prefix: one path segment, never empty."""
    cleaned = _UNSAFE.sub("_", name)
    return cleaned if cleaned and cleaned[0] != "-" else f"_{cleaned}"


def target_for(
    root: Path,
    name: str,
    *,
    catalog_name: str,
    schema_name: str,
    table_name_prefix: str | None,
    sampling_fraction: float,
    max_payload_bytes: int,
) -> Target:
    prefix = table_name_prefix or default_prefix(name)
    for part in (catalog_name, schema_name, prefix):
        if not part or _UNSAFE.search(part) or part.startswith("-"):
            raise ValueError(f"invalid inference table name part {part!r}: use letters, digits, '_' and '-'")
    table = f"{prefix}{SUFFIX}"
    return Target(
        name=f"{catalog_name}.{schema_name}.{table}",
        path=root / catalog_name / schema_name / table,
        sampling_fraction=sampling_fraction,
        max_payload_bytes=max_payload_bytes,
    )


def clip(body: bytes | None, cap: int) -> bytes | None:
    """The first ``cap`` bytes of a body (a copy only when it is longer)."""
    if body is None or len(body) <= cap:
        return body
    return body[:cap]


_ATTRIBUTES = (
    ("endpoint_name", "endpoint"),
    ("served_entity_name", "served_entity"),
    ("model_name", "model"),
    ("model_version", "version"),
    ("model_alias", "alias"),
    ("caller", "principal"),
    ("content_type", "content_type"),
    ("error", "error"),
)
_BODY_KEYS = ("truncated", "bytes", "encoding")
METADATA_KEYS = (
    "door", "rows", "execution_time_us", *(key for key, _ in _ATTRIBUTES),
    *(f"{which}_{key}" for which in ("request", "response") for key in _BODY_KEYS),
)  # fmt: skip
"""Every key ``request_metadata`` may hold, in the order a row lists them (absent keys are left out)."""


def encode(pending: Sequence[Pending]) -> pa.Table:
    """The Arrow table of captured requests, in the order given, with ``SCHEMA``.

    Column by column (list comprehensions and Arrow kernels): the writer holds the GIL ~1 µs per row.
    """
    exchanges = [item.exchange for item in pending]
    stamps = np.array([ex.timestamp for ex in exchanges], np.float64)
    latency = np.array([ex.latency_s for ex in exchanges], np.float64)
    requests = [_body(item.request, item.exchange.request) for item in pending]
    responses = [_body(item.response, item.exchange.response) for item in pending]
    columns = [
        _strings([ex.door for ex in exchanges]),
        pa.array([ex.rows for ex in exchanges], pa.int64()).cast(pa.string()),
        pa.array(np.rint(latency * 1_000_000).astype(np.int64)).cast(pa.string()),
        *(_strings([getattr(ex, attribute) for ex in exchanges]) for _, attribute in _ATTRIBUTES),
        *(_strings([body[i] for body in bodies]) for bodies in (requests, responses) for i in (1, 2, 3)),
    ]
    return pa.table(
        [
            _strings([ex.client_request_id for ex in exchanges]),
            _strings([ex.request_id for ex in exchanges]),
            pa.array(np.floor_divide(stamps, 86400).astype(np.int32)).cast(pa.date32()),
            pa.array((stamps * 1000).astype(np.int64)),
            pa.array([ex.status for ex in exchanges], pa.int32()),
            pa.array(np.rint(latency * 1000).astype(np.int64)),
            pa.array([item.target.sampling_fraction for item in pending], pa.float64()),
            _strings([body[0] for body in requests]),
            _strings([body[0] for body in responses]),
            _map(columns, len(pending)),
        ],
        schema=SCHEMA,
    )


def _map(columns: list[pa.Array], n: int) -> pa.Array:
    """Per-key value columns (null: key absent) → one map per row, keys in ``METADATA_KEYS`` order."""
    k = len(columns)
    row_major = np.arange(k * n).reshape(k, n).T.ravel()
    values = pa.concat_arrays(columns).take(row_major)
    keys = pa.array(METADATA_KEYS, pa.string()).take(np.tile(np.arange(k), n))
    present = values.is_valid()
    counts = present.to_numpy(zero_copy_only=False).reshape(n, k).sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    mapped = pa.MapArray.from_arrays(pa.array(offsets), keys.filter(present), values.filter(present))
    return mapped.cast(SCHEMA.field("request_metadata").type)


def _strings(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # a door noted a non-string (an int version, ...)
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _body(kept: bytes | None, original: bytes | None) -> tuple[str | None, str | None, str | None, str | None]:
    """A body as the ``request``/``response`` string (UTF-8 text as is, anything else base64) and its metadata:
    ``(text, truncated, original bytes, encoding)``."""
    if kept is None or original is None:
        return None, None, None, None
    truncated = len(kept) < len(original)
    marks = ("true", str(len(original))) if truncated else (None, None)
    try:
        return kept.decode("utf-8"), *marks, None
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(kept) - 3 and exc.end == len(kept):  # the cut split one character
            try:
                return kept[: exc.start].decode("utf-8"), *marks, None
            except UnicodeDecodeError:
                pass
    return base64.b64encode(kept).decode("ascii"), *marks, "base64"
