"""The value types of a Batcher: its limits (``BatcherConfig``), one batch (``BatchRecord``) and its counters."""

from __future__ import annotations

from dataclasses import dataclass


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
    """

    max_batch_rows: int = 1024
    max_queue_requests: int = 2048
    max_delay_ms: float = 0.0
    timeout_s: float = 30.0
    max_concurrent_batches: int = 1
    inline_below_ms: float = 0.25

    def __post_init__(self) -> None:
        for name in ("max_batch_rows", "max_queue_requests", "max_concurrent_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must not be negative, got {self.max_delay_ms}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.inline_below_ms < 0:
            raise ValueError(f"inline_below_ms must not be negative, got {self.inline_below_ms}")


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
