"""Dynamic batching in front of one session, "batch while busy" like Triton's default scheduler.

One worker task owns the queue. When the runtime has room it dispatches at once with everything queued that can
share a batch (same input names, dtypes and per-row shapes; up to ``max_batch_rows``); requests that arrive while a
batch runs pile up and go together in the next one. ``max_delay_ms`` only adds a wait while another batch is still
running (it ends early when the runtime goes idle or the batch is full), so a lone request never waits on a timer.

Batches run in a dedicated thread pool (onnxruntime releases the GIL); stacking and splitting happen there too, so
the event loop only moves futures. A batch that is known to be cheap (its size class has run in under
``inline_below_ms`` at least ``_INLINE_AFTER`` times) runs on the event loop itself when batches run one at a time:
for a few rows the thread hand-off (a wake-up, the GIL hand-over and back, a self-pipe write) costs more than the
inference.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from server.errors import InferenceFailed, InferenceTimeout, InvalidInput, Overloaded, ServerStopping
from server.runtime.batch import rows, shape_key, split, stack
from server.runtime.batching import BatcherConfig, BatcherStats, BatchRecord

__all__ = ["BatchRecord", "Batcher", "BatcherConfig", "BatcherStats", "RunBatch"]

logger = logging.getLogger(__name__)

#: Runs of a size class measured before its batches may run on the event loop.
_INLINE_AFTER = 8

RunBatch = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


class _Request:
    __slots__ = ("deadline", "feeds", "future", "key", "rows", "submitted")

    def __init__(
        self, feeds: Mapping[str, np.ndarray] | None, n: int, key: Hashable, future: asyncio.Future[Any], t: float
    ) -> None:
        self.feeds = feeds
        self.rows = n
        self.key = key
        self.future = future
        self.submitted = t
        self.deadline = 0.0


class _BatchError(Exception):
    """Raised in the worker thread; carries the message for InferenceFailed and the time spent."""

    def __init__(self, message: str, run_s: float) -> None:
        super().__init__(message)
        self.run_s = run_s


class Batcher:
    """Queue, batch and run requests for one session.

    All coroutines must be called from the event loop that ran ``start()``; listeners are called on it.
    """

    def __init__(self, run_batch: RunBatch, config: BatcherConfig, *, name: str = "") -> None:
        """Create a stopped batcher.

        Args:
            run_batch: Runs one batch (called in a worker thread); every output must keep the batch's row count.
            config: Limits.
            name: Used in logs, error messages and thread names.
        """
        self._run_batch = run_batch
        self._config = config
        self._name = name
        self._label = f"model {name!r}" if name else "the batcher"
        self._delay_s = config.max_delay_ms / 1000.0
        self._queue: deque[_Request] = deque()
        # Every unresolved request in submit order; with one timeout for all, deadlines are ascending, so a single
        # timer for the oldest one enforces them all (no per-request timer handles on the hot path).
        self._pending: deque[_Request] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._queued_rows = 0
        self._in_flight = 0
        self._running: dict[asyncio.Future[Any], list[_Request]] = {}
        self._listeners: list[Callable[[BatchRecord], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self._batches = self._requests = self._rows = self._max_rows = self._failed = self._timeouts = 0
        self._last: BatchRecord | None = None
        # Per size class (rows.bit_length()): [runs seen, a slowly forgetting minimum of their run time in seconds].
        self._cost: dict[int, list[float]] = {}
        self._inline_s = config.inline_below_ms / 1000.0 if config.max_concurrent_batches == 1 else 0.0
        self._inline_batches = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the worker task in the running event loop (a no-op if already started)."""
        if self._stopping:
            raise RuntimeError(f"{self._label} was stopped and cannot be restarted")
        if self._worker is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=self._config.max_concurrent_batches, thread_name_prefix=f"batcher-{self._name or 'model'}"
        )
        self._worker = self._loop.create_task(self._work(), name=f"batcher-{self._name}")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, let queued and running ones finish, end the worker.

        Args:
            timeout_s: Longest wait for the drain; after it, whatever is left fails with ``ServerStopping``.
        """
        self._stopping = True
        worker = self._worker
        if worker is None or self._wake is None:
            return
        self._wake.set()
        done, _ = await asyncio.wait({worker}, timeout=timeout_s)
        if not done:
            logger.warning("%s did not drain within %ss; failing what is left", self._label, timeout_s)
            worker.cancel()
            for future, batch in list(self._running.items()):
                self._fail(batch, lambda: ServerStopping(f"{self._label} stopped before this request finished"))
                future.cancel()
            await asyncio.wait({worker})
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        """Whether the batcher accepts requests."""
        return self._worker is not None and not self._worker.done() and not self._stopping

    def add_listener(self, fn: Callable[[BatchRecord], None]) -> None:
        """Call ``fn`` on the event loop after every batch (logs, metrics, tests); its errors are logged."""
        self._listeners.append(fn)

    @property
    def stats(self) -> BatcherStats:
        """A snapshot of the counters."""
        return BatcherStats(
            batches=self._batches,
            requests=self._requests,
            rows=self._rows,
            max_rows_seen=self._max_rows,
            queue_depth=sum(1 for req in self._queue if not req.future.done()),
            in_flight=self._in_flight,
            last=self._last,
            failed_batches=self._failed,
            timeouts=self._timeouts,
            max_batch_rows=self._config.max_batch_rows,
            inline_batches=self._inline_batches,
        )

    # ------------------------------------------------------------------ requests

    async def submit(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request and wait for its rows of the batch result (see ``submit_traced``)."""
        outputs, _ = await self.submit_traced(feeds)
        return outputs

    async def submit_traced(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], BatchRecord]:
        """Queue one request and wait for its rows of the batch result, with the record of the batch it ran in.

        Args:
            feeds: One array per input; the leading dimension is the request's row count.

        Returns:
            One array per output with the request's rows, and the record of its batch.

        Raises:
            InvalidInput: the inputs disagree on the row count.
            Overloaded: the queue is full.
            InferenceTimeout: no result within ``timeout_s``.
            InferenceFailed: the model raised or returned a malformed result.
            ServerStopping: ``stop()`` was called.
        """
        if self._stopping:
            raise ServerStopping(f"{self._label} is stopping and accepts no new requests")
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            raise RuntimeError("Batcher.start() was not called")
        try:
            n = rows(feeds)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        limit = self._config.max_queue_requests
        if len(self._queue) >= limit and self._purge() >= limit:
            raise Overloaded(f"{self._label} has {limit} requests queued; retry later")
        future: asyncio.Future[tuple[dict[str, np.ndarray], BatchRecord]] = loop.create_future()
        now = loop.time()
        req = _Request(feeds, n, shape_key(feeds), future, now)
        req.deadline = now + self._config.timeout_s
        self._queue.append(req)
        self._pending.append(req)
        self._queued_rows += n
        if self._expiry is None:
            self._expiry = loop.call_at(req.deadline, self._expire)
        wake.set()
        return await future  # cancelled with the caller: the worker then skips the request

    def _expire(self) -> None:
        """Timer: fail requests past their deadline (queued ones are then skipped), re-arm for the next one."""
        assert self._loop is not None
        self._expiry = None
        pending = self._pending
        now = self._loop.time() + 1e-3  # timers may fire a hair early
        while pending:
            req = pending[0]
            if not req.future.done():
                if req.deadline > now:
                    self._expiry = self._loop.call_at(req.deadline, self._expire)
                    return
                self._timeouts += 1
                req.future.set_exception(
                    InferenceTimeout(f"{self._label} gave no result within {self._config.timeout_s}s")
                )
            pending.popleft()

    def _purge(self) -> int:
        """Drop requests whose caller went away or timed out; return the queue length."""
        live = deque(req for req in self._queue if not req.future.done())
        self._queued_rows = sum(req.rows for req in live)
        self._queue = live
        return len(live)

    # ------------------------------------------------------------------ worker

    async def _work(self) -> None:
        assert self._wake is not None
        wake, limit = self._wake, self._config.max_concurrent_batches
        try:
            while True:
                wake.clear()
                if self._queue and self._in_flight < limit:
                    if self._in_flight and self._delay_s and not self._stopping:
                        await self._collect()
                    batch = self._take()
                    if batch:
                        self._dispatch(batch)
                    continue
                if self._stopping and not self._queue and not self._in_flight:
                    return
                await wake.wait()
        except Exception:
            logger.exception("%s worker crashed", self._label)
        finally:
            self._stopping = True
            for req in self._queue:
                if not req.future.done():
                    req.future.set_exception(ServerStopping(f"{self._label} stopped before running this request"))
            self._queue.clear()
            self._queued_rows = 0

    async def _collect(self) -> None:
        """While another batch runs, wait up to max_delay for more rows (ends early when the runtime goes idle)."""
        assert self._loop is not None and self._wake is not None
        deadline = self._loop.time() + self._delay_s
        while self._in_flight and not self._stopping and self._queued_rows < self._config.max_batch_rows:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Request]:
        """Pop the next batch: the oldest live request plus following compatible ones, up to max_batch_rows."""
        queue, max_rows = self._queue, self._config.max_batch_rows
        batch: list[_Request] = []
        skipped: list[_Request] = []
        total = 0
        key: Hashable = None
        while queue:
            req = queue[0]
            if req.future.done():  # cancelled by its caller or timed out while queued
                queue.popleft()
                self._queued_rows -= req.rows
                continue
            if not batch:
                key = req.key
            elif req.key != key:
                skipped.append(queue.popleft())
                continue
            if batch and total + req.rows > max_rows:
                break
            queue.popleft()
            self._queued_rows -= req.rows
            batch.append(req)
            total += req.rows
            if total >= max_rows:
                break
        if skipped:
            queue.extendleft(reversed(skipped))
        return batch

    def _dispatch(self, batch: list[_Request]) -> None:
        assert self._loop is not None and self._executor is not None
        self._in_flight += 1
        queue_wait = self._loop.time() - batch[0].submitted
        feeds: list[Mapping[str, np.ndarray]] = []
        for req in batch:
            assert req.feeds is not None
            feeds.append(req.feeds)
            req.feeds = None  # the request may outlive the batch in self._pending; its inputs need not
        if self._inline_s and self._cheap(sum(req.rows for req in batch)):
            # Known to be cheap: run here and now (no thread hand-off), then complete as a thread run would.
            self._inline_batches += 1
            future = self._loop.create_future()
            try:
                future.set_result(self._execute(feeds))
            except _BatchError as exc:
                future.set_exception(exc)
            self._running[future] = batch
            self._complete(batch, queue_wait, future)
            return
        future = self._loop.run_in_executor(self._executor, self._execute, feeds)
        self._running[future] = batch
        future.add_done_callback(functools.partial(self._complete, batch, queue_wait))

    def _cheap(self, n_rows: int) -> bool:
        cost = self._cost.get(n_rows.bit_length())
        return cost is not None and cost[0] >= _INLINE_AFTER and cost[1] < self._inline_s

    def _learn(self, n_rows: int, run_s: float) -> None:
        """Track each size class's run time: a minimum that forgets slowly (2% a batch), so one slow run or a
        contended GIL does not mark a class expensive for good, and a class that got slower is noticed."""
        cost = self._cost.setdefault(n_rows.bit_length(), [0, run_s])
        cost[0] += 1
        cost[1] = min(run_s, cost[1] * 1.02)

    def _execute(self, requests: list[Mapping[str, np.ndarray]]) -> tuple[list[dict[str, np.ndarray]], float]:
        """Worker thread: stack, run, split."""
        start = time.perf_counter()
        try:
            feeds, offsets = stack(requests)
            outputs = self._run_batch(feeds)
        except Exception as exc:
            raise _BatchError(f"model raised {type(exc).__name__}: {exc}", time.perf_counter() - start) from exc
        run_s = time.perf_counter() - start
        try:
            parts = split(outputs, offsets)
        except Exception as exc:
            raise _BatchError(f"malformed model result: {exc}", run_s) from exc
        return parts, run_s

    def _complete(self, batch: list[_Request], queue_wait: float, future: asyncio.Future[Any]) -> None:
        """Event loop: hand each request its rows (or the error), update stats, notify listeners."""
        self._running.pop(future, None)
        self._in_flight -= 1
        pending = self._pending
        if self._wake is not None:
            self._wake.set()
        error: str | None = None
        cause: BaseException | None = None
        run_s = 0.0
        parts: list[dict[str, np.ndarray]] = []
        if future.cancelled():
            error = "batch abandoned at stop"
        elif (exc := future.exception()) is not None:
            error, cause = str(exc), exc.__cause__ if isinstance(exc, _BatchError) else exc
            run_s = exc.run_s if isinstance(exc, _BatchError) else 0.0
        else:
            parts, run_s = future.result()
        n_rows = sum(req.rows for req in batch)
        if error is None:
            self._learn(n_rows, run_s)
        record = BatchRecord(rows=n_rows, requests=len(batch), queue_wait_s=queue_wait, run_s=run_s, error=error)
        for req, part in zip(batch, parts, strict=False):
            if not req.future.done():
                req.future.set_result((part, record))
        if error is not None:
            message = f"inference failed for {self._label}: {error}"
            self._fail(batch, lambda: InferenceFailed(message), cause)
            self._failed += 1
            logger.error("%s: batch of %d requests failed: %s", self._label, len(batch), error, exc_info=cause)

        self._batches += 1
        self._requests += len(batch)
        self._rows += n_rows
        self._max_rows = max(self._max_rows, n_rows)
        self._last = record
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("%s: batch listener %r failed", self._label, listener)
        while pending and pending[0].future.done():
            pending.popleft()

    @staticmethod
    def _fail(batch: list[_Request], make: Callable[[], Exception], cause: BaseException | None = None) -> None:
        for req in batch:
            if not req.future.done():
                err = make()
                err.__cause__ = cause
                req.future.set_exception(err)
