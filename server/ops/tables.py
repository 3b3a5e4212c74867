"""Inference tables: every captured request and response, appended to a Delta Lake table off the hot path.

``InferenceTables`` is the ``CaptureSink`` of ``server/ops/record.py``. The request side only looks a name up
(``wants``) and appends to a bounded buffer (``capture``); one writer thread commits the buffer to
``<state_dir>/tables/<catalog>/<schema>/<prefix>_payload`` (Databricks' inference table schema,
``server/ops/payload.py``) every ``flush_rows`` rows or ``flush_s`` seconds, compacts a table every
``compact_every`` commits to it and vacuums with Delta's default retention. A full buffer drops the row and counts
it (``dropped``); a failed commit loses its rows and counts them (``failed``); neither ever reaches a request.
``flush()`` writes what is buffered now; ``close()`` (at shutdown, after the server answered its last request)
writes everything and stops the thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from server.ops.payload import PARTITION, Pending, Target, clip, encode, target_for
from server.ops.record import Exchange
from server.settings import CaptureSettings, Settings, TablesSettings

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Targets = dict[str | None, Target]
"""By model or endpoint name (``None`` is never a key: a lookup of a missing name is one ``dict.get``)."""


class InferenceTables:
    """Captures requests of the models and endpoints it was told about into Delta tables under ``root``.

    Args:
        root: The tables' root (``<state_dir>/tables``).
        settings: Buffer size, commit thresholds, compaction.
        clock: Monotonic seconds (commit timer, drop warnings); tests pass a fake one.
        sample: Uniform ``[0, 1)`` numbers for sampling; tests pass a seeded one.
        start: Run the writer thread (started with the first table to capture to). Without it, ``tick()`` does
            the writer's work (tests).
    """

    def __init__(
        self,
        root: Path,
        settings: TablesSettings | None = None,
        *,
        clock: Clock = time.monotonic,
        sample: Callable[[], float] = random.random,
        start: bool = True,
    ) -> None:
        self.root = root.resolve()
        self.settings = settings or TablesSettings()
        self._clock = clock
        self._sample = sample
        self._models: Targets = {}
        self._endpoints: Targets = {}
        self._buffer: deque[Pending] = deque()
        self._limit = self.settings.buffer_rows
        self._flush_rows = self.settings.flush_rows
        self._wake = threading.Event()
        self._lock = threading.Lock()  # drop counting, flush waiters
        self._write_lock = threading.Lock()  # one writer at a time (the thread, or tick()/flush() without it)
        self._waiters: list[threading.Event] = []
        self._last_commit = clock()
        self._next_warning = float("-inf")
        self._commits: dict[Path, int] = {}
        self._closed = False
        self.dropped = 0
        """Rows not captured because the buffer was full (or the sink closed)."""
        self.failed = 0
        """Rows lost because their commit failed."""
        self.written = 0
        """Rows committed."""
        self.commits = 0
        """Commits made (all tables)."""
        self.last_commit_s = 0.0
        """Seconds the latest commit took."""
        self._start = start
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> InferenceTables:
        """The sink of a process: tables under ``<state_dir>/tables``, capture on per ``deployments[].capture``."""
        from registry.uri import ModelRef

        tables = cls(settings.state_dir / "tables", settings.tables, **kwargs)  # type: ignore[arg-type]
        for spec in settings.all_deployments():
            if spec.capture is not None:
                tables.enable_model(ModelRef.parse(spec.model).name, spec.capture)
        return tables

    # -- which requests are captured ------------------------------------------------------------------------------

    def enable_model(self, name: str, capture: CaptureSettings | None = None) -> Target | None:
        """Capture every request of the registered model ``name`` (``capture.enabled`` false: stop capturing)."""
        self._models = _with(self._models, name, self._target(name, capture or CaptureSettings()))
        return self._started(self._models.get(name))

    def disable_model(self, name: str) -> None:
        self._models = _with(self._models, name, None)

    def enable_endpoint(self, name: str, capture: CaptureSettings | None = None) -> Target | None:
        """Capture every request of the serving endpoint ``name`` (its ``auto_capture_config``); it takes precedence
        over the capture of the model it serves. ``capture.enabled`` false: stop capturing."""
        self._endpoints = _with(self._endpoints, name, self._target(name, capture or CaptureSettings()))
        return self._started(self._endpoints.get(name))

    def disable_endpoint(self, name: str) -> None:
        self._endpoints = _with(self._endpoints, name, None)

    def target(self, model: str | None, endpoint: str | None) -> Target | None:
        """Where a request of this model / endpoint goes (the endpoint's table first), ``None``: not captured."""
        return self._endpoints.get(endpoint) or self._models.get(model)

    def _started(self, target: Target | None) -> Target | None:
        """Start the writer thread with the first table (a process capturing nothing runs no thread)."""
        with self._lock:
            if target is not None and self._start and self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="inference-tables", daemon=True)
                self._thread.start()
        return target

    def _target(self, name: str, capture: CaptureSettings) -> Target | None:
        if not capture.enabled or capture.sampling_fraction <= 0.0:
            return None
        return target_for(
            self.root,
            name,
            catalog_name=capture.catalog_name,
            schema_name=capture.schema_name,
            table_name_prefix=capture.table_name_prefix,
            sampling_fraction=capture.sampling_fraction,
            max_payload_bytes=capture.max_payload_bytes,
        )

    # -- the hot path ---------------------------------------------------------------------------------------------

    def wants(self, model: str | None, endpoint: str | None) -> bool:
        return endpoint in self._endpoints or model in self._models

    def capture(self, exchange: Exchange) -> None:
        """Enqueue (sampled, bodies clipped); a full buffer or a closed sink drops and counts. Never blocks."""
        target = self._endpoints.get(exchange.endpoint) or self._models.get(exchange.model)
        if target is None:
            return
        if target.sampling_fraction < 1.0 and self._sample() >= target.sampling_fraction:
            return
        buffer = self._buffer
        if len(buffer) >= self._limit or self._closed:
            self._drop()
            return
        cap = target.max_payload_bytes
        buffer.append(Pending(target, exchange, clip(exchange.request, cap), clip(exchange.response, cap)))
        if len(buffer) >= self._flush_rows and not self._wake.is_set():
            self._wake.set()

    def _drop(self) -> None:
        with self._lock:
            self.dropped += 1
            now = self._clock()
            warn = now >= self._next_warning
            if warn:
                self._next_warning = now + self.settings.drop_warning_s
        if warn:
            log.warning(
                "inference table buffer full: requests are not being captured",
                extra={"dropped": self.dropped, "buffer_rows": self._limit},
            )

    @property
    def buffered(self) -> int:
        """Rows waiting for the writer."""
        return len(self._buffer)

    # -- the writer -----------------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Commit every row captured before this call; ``False`` when ``timeout`` passed first."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            self.tick(force=True)
            return True
        done = threading.Event()
        with self._lock:
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop capturing, commit everything buffered and stop the writer. Idempotent; ``False`` on timeout."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            self.tick(force=True)
            return True
        self._wake.set()
        thread.join(self.settings.close_timeout_s if timeout is None else timeout)
        return not thread.is_alive()

    def tick(self, *, force: bool = False) -> int:
        """The writer's step: commit when ``flush_rows`` are buffered, ``flush_s`` passed, a flush waits or
        ``force``. Returns the rows committed."""
        with self._write_lock:
            with self._lock:
                waiters, self._waiters = self._waiters, []
            due = (
                force
                or bool(waiters)
                or len(self._buffer) >= self._flush_rows
                or self._clock() - self._last_commit >= self.settings.flush_s
            )
            written = self._write_buffered() if due else 0
            for waiter in waiters:
                waiter.set()
            return written

    def _run(self) -> None:
        while True:
            closing = self._closed
            if not closing:
                self._wake.wait(max(self.settings.flush_s - (self._clock() - self._last_commit), 0.0))
                self._wake.clear()
            try:
                self.tick(force=closing)
            except Exception:  # never let the writer die (a failed commit is counted in ``failed`` already)
                log.exception("inference table writer step failed")
            if closing:
                return

    def _write_buffered(self) -> int:
        buffer = self._buffer
        taken = [buffer.popleft() for _ in range(len(buffer))]
        self._last_commit = self._clock()
        groups: dict[Path, list[Pending]] = {}
        for item in taken:
            groups.setdefault(item.target.path, []).append(item)
        written = 0
        for path, rows in groups.items():
            written += self._append(path, rows[0].target.name, rows)
        return written

    def _append(self, path: Path, name: str, rows: list[Pending]) -> int:
        try:
            table = encode(rows)
            started = time.perf_counter()
            _write(path, table)
            self.last_commit_s = time.perf_counter() - started
        except Exception as exc:
            self.failed += len(rows)
            log.error("inference table commit failed", extra={"table": name, "rows": len(rows), "error": repr(exc)})
            return 0
        self.written += len(rows)
        self.commits += 1
        count = self._commits[path] = self._commits.get(path, 0) + 1
        every = self.settings.compact_every
        if every and count % every == 0:
            self._compact(path, name)
        return len(rows)

    def _compact(self, path: Path, name: str) -> None:
        from deltalake import DeltaTable

        try:
            table = DeltaTable(path)
            table.optimize.compact()
            if self.settings.vacuum:  # Delta's default retention (7 days): never zero while anything may read
                table.vacuum(dry_run=False)
        except Exception as exc:  # compaction is an optimisation: the rows are already committed
            log.warning("inference table compaction failed", extra={"table": name, "error": repr(exc)})


def _write(path: Path, table: pa.Table) -> None:
    from deltalake import write_deltalake

    path.mkdir(parents=True, exist_ok=True)
    write_deltalake(path, table, mode="append", partition_by=[PARTITION])


def _with(targets: Targets, name: str, target: Target | None) -> Targets:
    """A copy with ``name`` set or removed (swapped in whole: the hot path reads without a lock)."""
    copy = dict(targets)
    if target is None:
        copy.pop(name, None)
    else:
        copy[name] = target
    return copy
