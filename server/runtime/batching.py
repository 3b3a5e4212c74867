"""The value types of a Batcher: its limits (``BatcherConfig``), one batch (``BatchRecord``) and its counters, and
what a door may set for the task it serves: the request's deadline (``DEADLINE``) and its reserved room (``SLOT``)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.runtime.batcher import Slot

DEADLINE: ContextVar[float | None] = ContextVar("modelport_request_deadline", default=None)
"""The current request's deadline on the event loop's clock (``loop.time()``), set by a door from the client's
``X-Request-Timeout-Ms``; ``Batcher.submit`` uses it when no deadline is passed. Each request runs in its own task,
so setting it affects that request only."""

SLOT: ContextVar[Slot | None] = ContextVar("modelport_request_slot", default=None)
"""Room a door reserved for the current request (``Batcher.reserve``/``wait_slot``) before reading its body;
``Batcher.submit`` in the same task takes the request into it without checking again."""


@dataclass(frozen=True, slots=True)
class BatcherConfig:
    """Batching and admission limits for one model.

    Attributes:
        max_batch_rows: Rows per dispatched batch (a single request larger than this runs alone).
        max_queue_requests: Requests allowed to wait; one more raises ``Overloaded``.
        max_delay_ms: Extra wait to fill a batch, only while another batch is running.
        timeout_s: Per-request limit from submit to result (``InferenceTimeout``).
        max_concurrent_batches: Batches in flight at once (more than one helps CUDA sessions).
        inline_below_ms: Run a batch on the event loop when batches of its size class have taken less than this
            (``0`` never does); only while ``max_concurrent_batches`` is 1.
        max_queue_rows: Rows allowed to wait (``None``: 16 x ``max_batch_rows``); a request that would pass it
            raises ``Overloaded`` (one request larger than the bound is still taken when nothing waits).
        max_queue_bytes: Bytes of queued inputs allowed to wait (array bytes, plus an estimate of 64 bytes per
            element of object arrays such as strings); past it, ``Overloaded``.
        max_queue_wait_s: Longest a request may wait for room (``Batcher.wait_slot``) and in the queue: one still
            waiting or queued after it gets ``Overloaded`` instead of being run late; the queue also counts as full
            when its rows, at the rate batches have been running, would take longer than this (``None``: no bound;
            the wait for room is then bounded by ``timeout_s``).
        max_waiting_requests: Requests that may wait for room before their body is read (``Batcher.wait_slot``;
            ``None``: 4 x ``max_queue_requests``; ``0``: none, a full queue refuses at once).
    """

    max_batch_rows: int = 1024
    max_queue_requests: int = 2048
    max_delay_ms: float = 0.0
    timeout_s: float = 30.0
    max_concurrent_batches: int = 1
    inline_below_ms: float = 0.25
    max_queue_rows: int | None = None
    max_queue_bytes: int = 256 * 1024 * 1024
    max_queue_wait_s: float | None = 5.0
    max_waiting_requests: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_rows", "max_queue_requests", "max_concurrent_batches", "max_queue_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue_rows is not None and self.max_queue_rows < 1:
            raise ValueError(f"max_queue_rows must be at least 1, got {self.max_queue_rows}")
        if self.max_waiting_requests is not None and self.max_waiting_requests < 0:
            raise ValueError(f"max_waiting_requests must not be negative, got {self.max_waiting_requests}")
        if self.max_queue_wait_s is not None and self.max_queue_wait_s <= 0:
            raise ValueError(f"max_queue_wait_s must be positive, got {self.max_queue_wait_s}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must not be negative, got {self.max_delay_ms}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.inline_below_ms < 0:
            raise ValueError(f"inline_below_ms must not be negative, got {self.inline_below_ms}")

    @property
    def queue_rows_limit(self) -> int:
        """``max_queue_rows``, or 16 batches' worth when unset."""
        return self.max_queue_rows if self.max_queue_rows is not None else 16 * self.max_batch_rows


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One dispatched batch.

    Attributes:
        rows: Rows in the batch.
        requests: Requests in the batch.
        queue_wait_s: How long the oldest request waited before dispatch.
        run_s: Time in the worker thread (stack, run, split).
        error: Why the batch failed, ``None`` when it succeeded.
    """

    rows: int
    requests: int
    queue_wait_s: float
    run_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters since start (``batches``/``requests``/``rows`` include failed batches)."""

    batches: int
    requests: int
    rows: int
    max_rows_seen: int
    queue_depth: int
    in_flight: int
    last: BatchRecord | None
    failed_batches: int = 0
    timeouts: int = 0
    max_batch_rows: int = 0
    """The configured ``max_batch_rows`` (what v2 clients see as ``max_batch_size``)."""
    inline_batches: int = 0
    """Batches run on the event loop (known cheap) instead of the worker thread."""
    queued_rows: int = 0
    queued_bytes: int = 0
    refused: int = 0
    """Requests refused with ``Overloaded`` before queueing (no room: requests, rows, bytes or expected wait)."""
    dropped: int = 0
    """Requests dropped with ``Overloaded`` after waiting ``max_queue_wait_s`` in the queue, never run."""
    abandoned: int = 0
    """Requests whose caller went away (cancelled) while queued: removed, never run."""
    waiting: int = 0
    """Requests waiting for room before their body is read (``Batcher.wait_slot``)."""
    reserved: int = 0
    """Slots handed to doors and not yet submitted."""
