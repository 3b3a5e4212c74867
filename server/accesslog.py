"""A cheap JSON-lines handler for the per-request access log (``modelport.access``).

One line per request through structlog's ``ProcessorFormatter`` and an unbuffered ``StreamHandler`` costs about 25 us
of formatting plus a ``write()`` + ``flush()`` per line: on the 1-row benchmark it halved the server's throughput
(docs/performance.md). This handler renders the same fields (``event``, ``level``, ``logger``, the ``extra=`` fields,
``timestamp`` in ISO UTC) with orjson and writes them in batches: when 64 KiB are pending, when a record of level
WARNING or above arrives, every ``interval_s`` from a daemon thread, and on ``flush()``/``close()``.

Wiring (the entry point's logging setup, JSON format only)::

    access = logging.getLogger("modelport.access")
    access.addHandler(JsonLinesHandler(sys.stderr))
    access.propagate = False
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import IO, Any

import orjson

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonLinesHandler(logging.Handler):
    """Buffered JSON lines on a text or binary stream.

    Args:
        stream: Where lines go (``sys.stderr``); its binary buffer is used when it has one.
        interval_s: Longest time a line waits in the buffer.
        max_pending: Bytes that trigger an immediate write.
    """

    def __init__(self, stream: IO[str] | IO[bytes], *, interval_s: float = 0.2, max_pending: int = 64 * 1024) -> None:
        super().__init__()
        self._stream: Any = getattr(stream, "buffer", stream)
        self._pending: list[bytes] = []
        self._size = 0
        self._max = max_pending
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._tick, args=(interval_s,), name="access-log", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.render(record)
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            self._size += len(line)
            urgent = self._size >= self._max or record.levelno >= logging.WARNING
        if urgent:
            self.flush()

    @staticmethod
    def render(record: logging.LogRecord) -> bytes:
        """One JSON line with the field layout of the structlog JSON renderer."""
        data: dict[str, Any] = {"event": record.getMessage(), "level": record.levelname.lower(), "logger": record.name}
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        data["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z")
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY, default=str)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._pending:
                return
            data = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):  # stream closed at interpreter exit
                pass

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()

    def _tick(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.flush()
