"""The buffered JSON-lines access-log handler: structlog's field layout, batched writes, nothing lost on close."""

from __future__ import annotations

import io
import logging

import orjson

from server.accesslog import JsonLinesHandler


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger("modelport.test-access")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def test_lines_carry_event_level_logger_extras_and_timestamp() -> None:
    stream = io.BytesIO()
    handler = JsonLinesHandler(stream, interval_s=3600)
    log = _logger(handler)
    log.info("request", extra={"request_id": "r1", "status": 200, "latency_ms": 1.5})
    assert stream.getvalue() == b""  # buffered
    handler.flush()
    (line,) = stream.getvalue().splitlines()
    data = orjson.loads(line)
    assert list(data)[:3] == ["event", "level", "logger"]
    assert data["event"] == "request" and data["level"] == "info" and data["logger"] == "modelport.test-access"
    assert (data["request_id"], data["status"], data["latency_ms"]) == ("r1", 200, 1.5)
    assert data["timestamp"].endswith("Z") and "T" in data["timestamp"]
    handler.close()


def test_warnings_flush_at_once_and_close_flushes_the_rest() -> None:
    stream = io.BytesIO()
    handler = JsonLinesHandler(stream, interval_s=3600)
    log = _logger(handler)
    log.info("one")
    log.warning("two")
    assert [orjson.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["one", "two"]
    log.info("three")
    handler.close()
    assert orjson.loads(stream.getvalue().splitlines()[-1])["event"] == "three"


def test_a_full_buffer_is_written_without_waiting() -> None:
    stream = io.BytesIO()
    handler = JsonLinesHandler(stream, interval_s=3600, max_pending=200)
    log = _logger(handler)
    for i in range(10):
        log.info("request", extra={"n": i, "padding": "x" * 50})
    assert len(stream.getvalue().splitlines()) >= 8
    handler.close()
    assert len(stream.getvalue().splitlines()) == 10


def test_text_streams_are_written_through_their_binary_buffer() -> None:
    raw = io.BytesIO()
    text = io.TextIOWrapper(raw, encoding="utf-8")
    handler = JsonLinesHandler(text, interval_s=3600)
    _logger(handler).info("héllo", extra={"obj": object.__name__})
    handler.close()
    assert orjson.loads(raw.getvalue())["event"] == "héllo"
