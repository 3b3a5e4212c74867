"""Batch scoring: Parquet, Delta Lake and CSV tables (or in-memory tables) through a registry model, in chunks,
with the deployment ``serve`` builds (same conversion cache, parity check, session and decoding).

```python
from server.batch import score

score("customer_ltv@champion", "customers.parquet", "scored.parquet", keep=["customer_id"])
table = score("models:/sales_forecast/1", "plan.csv")           # no output: a pyarrow.Table
```

``modelport score`` and ``modelport sql`` (DuckDB ``ai_query``) are the command-line doors (docs/batch.md). The
names below load on first use, so the ``modelport`` command starts without importing MLflow or pyarrow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.batch.errors import BatchError as BatchError
    from server.batch.errors import Cancelled as Cancelled
    from server.batch.errors import SchemaMismatch as SchemaMismatch
    from server.batch.job import score as score
    from server.batch.model import DEFAULT_CHUNK_ROWS as DEFAULT_CHUNK_ROWS
    from server.batch.model import BatchModel as BatchModel
    from server.batch.sql import SqlSession as SqlSession

_EXPORTS = {
    "BatchError": "server.batch.errors",
    "Cancelled": "server.batch.errors",
    "SchemaMismatch": "server.batch.errors",
    "score": "server.batch.job",
    "DEFAULT_CHUNK_ROWS": "server.batch.model",
    "BatchModel": "server.batch.model",
    "SqlSession": "server.batch.sql",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'server.batch' has no attribute {name!r}")
    return getattr(import_module(module), name)
