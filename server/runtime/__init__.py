"""Model runtime: onnxruntime/python sessions and the dynamic batcher in front of them.

Knows nothing of HTTP, MCP, MLflow or the registry package; imports only numpy, onnxruntime (onnx lazily, to build
the CUDA probe model and to inspect graphs for placement), the standard library and ``server.errors``.
"""

from __future__ import annotations

from server.runtime.batch import rows, shape_key, split, stack
from server.runtime.batcher import Batcher, BatcherConfig, BatcherStats, BatchRecord
from server.runtime.providers import select_providers
from server.runtime.session import InputInfo, OnnxSession, PyfuncSession, Session

__all__ = [
    "BatchRecord",
    "Batcher",
    "BatcherConfig",
    "BatcherStats",
    "InputInfo",
    "OnnxSession",
    "PyfuncSession",
    "Session",
    "rows",
    "select_providers",
    "shape_key",
    "split",
    "stack",
]
