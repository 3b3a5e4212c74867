"""Usage from the inference tables: requests, rows, errors, latency and estimated cost per model, endpoint or caller.

Reads every ``<root>/<catalog>/<schema>/<prefix>_payload`` Delta table (only the small columns; partitions older
than the window are skipped). Counts are scaled by ``1 / sampling_fraction``, so a sampled table estimates what
was served; latency percentiles come from the captured rows. The cost is the request-time estimate:
execution time x ``cost.cpu_core_per_hour`` (one core busy for the request's duration); /metrics attributes
machine and GPU cost by busy time instead.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from server.ops.payload import SUFFIX
from server.settings import CostSettings

By = Literal["model", "endpoint", "caller"]
KEYS: dict[str, str] = {"model": "model_name", "endpoint": "endpoint_name", "caller": "caller"}
NONE = "-"
_COLUMNS = ["timestamp_ms", "status_code", "execution_time_ms", "sampling_fraction", "request_metadata"]


@dataclass(frozen=True, slots=True)
class Usage:
    """One group's numbers over the window."""

    key: str
    requests: int
    """Requests served (captured rows scaled by 1 / sampling_fraction)."""
    captured: int
    """Rows in the tables."""
    rows: int
    """Input rows scored (scaled like ``requests``)."""
    errors: int
    """Requests answered with a status >= 400 (scaled)."""
    errors_5xx: int
    p50_ms: float | None
    p99_ms: float | None
    cost: float | None
    """Request-time cost estimate; ``None`` without ``cost.cpu_core_per_hour``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_tables(root: Path) -> list[Path]:
    """The inference tables under ``root`` (``<catalog>/<schema>/<prefix>_payload`` holding a ``_delta_log``)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"*/*/*{SUFFIX}") if (p / "_delta_log").is_dir())


def table_name(root: Path, path: Path) -> str:
    """``catalog.schema.prefix_payload`` of a table path."""
    return ".".join(path.relative_to(root).parts)


def usage(
    tables: Sequence[Path], *, since_s: float, by: By, cost: CostSettings | None = None, now: float | None = None
) -> list[Usage]:
    """Per-group usage of requests that arrived within ``since_s`` seconds before ``now``, busiest first."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    start_ms = int(((now if now is not None else dt.datetime.now(dt.UTC).timestamp()) - since_s) * 1000)
    parts = [t for t in (_read(path, start_ms) for path in tables) if t.num_rows]
    if not parts:
        return []
    data = pa.concat_tables(parts)
    meta = data["request_metadata"]
    keys = pc.fill_null(pc.map_lookup(meta, KEYS[by], "first"), NONE).to_numpy(zero_copy_only=False)
    weight = 1.0 / np.clip(data["sampling_fraction"].to_numpy(zero_copy_only=False), 1e-9, 1.0)
    rows = _ints(pc.map_lookup(meta, "rows", "first"))
    micros = _ints(pc.map_lookup(meta, "execution_time_us", "first"), missing=-1)
    millis = data["execution_time_ms"].to_numpy(zero_copy_only=False).astype(np.float64)
    latency_ms = np.where(micros >= 0, micros / 1000.0, millis)
    status = data["status_code"].to_numpy(zero_copy_only=False)
    rate = None if cost is None else cost.cpu_core_per_hour
    result = []
    for key in np.unique(keys):
        mask = keys == key
        w, lat, st = weight[mask], latency_ms[mask], status[mask]
        result.append(
            Usage(
                key=str(key),
                requests=round(float(w.sum())),
                captured=int(mask.sum()),
                rows=round(float((rows[mask] * w).sum())),
                errors=round(float(w[st >= 400].sum())),
                errors_5xx=round(float(w[st >= 500].sum())),
                p50_ms=_percentile(lat, 50),
                p99_ms=_percentile(lat, 99),
                cost=None if rate is None else float((lat * w).sum()) / 1000.0 / 3600.0 * rate,
            )
        )
    return sorted(result, key=lambda u: (-u.requests, u.key))


def _read(path: Path, start_ms: int) -> Any:
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    day = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC).date()
    dataset = DeltaTable(path).to_pyarrow_dataset()
    window = (ds.field("date") >= day) & (ds.field("timestamp_ms") >= start_ms)
    # one thread: a threaded scan through deltalake's filesystem can abort the interpreter at exit (apache/arrow#34314)
    return dataset.to_table(columns=_COLUMNS, filter=window, use_threads=False)


def _ints(values: Any, missing: int = 0) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = pc.cast(values, pa.int64(), safe=False) if len(values) else pa.array([], pa.int64())
    return pc.fill_null(numbers, missing).to_numpy(zero_copy_only=False)


def _percentile(values: Any, q: float) -> float | None:
    import numpy as np

    if not len(values):
        return None
    result = float(np.percentile(values, q, method="higher"))
    return None if math.isnan(result) else round(result, 3)
