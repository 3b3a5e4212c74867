"""Logging setup, called only by the entry point. Libraries log with stdlib ``logging`` and ``extra=`` fields;
structlog renders every record as JSON (production) or readable console lines (development), on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

from server.accesslog import JsonLinesHandler

_NOISY = ("mlflow", "alembic", "urllib3", "httpx", "skl2onnx", "onnxmltools", "uvicorn.access", "mcp", "sse_starlette")


def configure_logging(fmt: Literal["auto", "console", "json"] = "auto", level: str = "INFO") -> None:
    """Route stdlib and structlog records through one structlog formatter on stderr."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    access = logging.getLogger("modelport.access")
    for old in list(access.handlers):
        access.removeHandler(old)
        old.close()
    if fmt == "json":
        # The per-request access line is the hottest log: render it with orjson and write it in batches
        # (at most 0.2 s late, at once for warnings); same fields as the structlog JSON lines.
        access.addHandler(JsonLinesHandler(sys.stderr))
        access.propagate = False
    else:
        access.propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
