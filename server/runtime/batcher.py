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

Admission is by cost. The queue is full when it holds ``max_queue_requests`` requests, ``max_queue_rows`` rows or
``max_queue_bytes`` bytes of inputs, or when the rows in it would take longer than ``max_queue_wait_s`` at the rate
batches have been running. A door reserves a ``Slot`` before it reads a request's body (``reserve``, or
``wait_slot``: a bounded waiting room that costs no read and no decode, where requests wait for room at most
``max_queue_wait_s`` and are then refused with ``Overloaded``, the oldest served first unless the oldest has waited
a quarter of that, when the newest go first so that the answers that do come come early); ``submit`` then takes the
request without another check. Without a slot (``submit`` alone, ``check_room``), a full queue refuses at once.
A queued request is removed when its caller is cancelled (the client went away), dropped with ``Overloaded`` when
it has waited ``max_queue_wait_s``, and failed with ``InferenceTimeout`` at its deadline (``timeout_s``, or the
earlier one a door set in ``DEADLINE``); none of those is ever run.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from typing import Any

import numpy as np

from server.errors import InferenceFailed, InferenceTimeout, InvalidInput, Overloaded, ServerStopping
from server.runtime.batch import rows, shape_key, split, stack
from server.runtime.batching import DEADLINE, SLOT, BatcherConfig, BatcherStats, BatchRecord

__all__ = ["DEADLINE", "SLOT", "BatchRecord", "Batcher", "BatcherConfig", "BatcherStats", "RunBatch", "Slot"]

logger = logging.getLogger(__name__)

#: Runs of a size class measured before its batches may run on the event loop.
_INLINE_AFTER = 8

#: Bytes counted per element of an object array (a Python ``str`` is ~50 bytes plus its text; the array holds a
#: pointer, which ``nbytes`` already counts).
_OBJECT_BYTES = 64

#: Requests that may wait for room (``wait_slot``) per ``max_queue_requests``, unless ``max_waiting_requests`` says.
_WAITING_PER_QUEUED = 4
#: The waiting room serves the newest first once its oldest has waited this fraction of ``max_queue_wait_s``.
_LIFO_AFTER = 0.25

RunBatch = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


class Slot:
    """Room for one request in a batcher's queue, reserved before its body is read or decoded.

    ``submit`` in the same task (``SLOT``) takes the request in this room without checking again; ``release`` gives
    the room back when the request ends without being submitted (idempotent).
    """

    __slots__ = ("_batcher", "live", "rows")

    def __init__(self, batcher: Batcher, rows: int) -> None:
        self._batcher = batcher
        self.rows = rows
        self.live = True

    def release(self) -> None:
        if self.live:
            self.live = False
            batcher = self._batcher
            batcher._reserved_n -= 1
            batcher._reserved_rows -= self.rows
            if batcher._waiters:
                batcher._grant()


class _Waiter:
    __slots__ = ("future", "since")

    def __init__(self, future: asyncio.Future[Slot], since: float) -> None:
        self.future = future
        self.since = since


class _Request:
    __slots__ = ("deadline", "expires", "feeds", "future", "key", "nbytes", "queue_deadline", "queued", "rows",
                 "submitted")  # fmt: skip

    def __init__(
        self,
        feeds: Mapping[str, np.ndarray] | None,
        n: int,
        key: Hashable,
        future: asyncio.Future[Any],
        t: float,
        nbytes: int = 0,
        expires: float = 0.0,
        queue_deadline: float = math.inf,
    ) -> None:
        self.feeds = feeds
        self.rows = n
        self.key = key
        self.future = future
        self.submitted = t
        self.expires = expires  # submitted + timeout_s: ascending in submit order
        self.deadline = expires  # the earlier of expires and the caller's own deadline
        self.queue_deadline = queue_deadline  # submitted + max_queue_wait_s
        self.nbytes = nbytes
        self.queued = True


def input_bytes(feeds: Mapping[str, np.ndarray]) -> int:
    """What a request's inputs hold in memory: array bytes, plus an estimate for the objects of object arrays."""
    total = 0
    for arr in feeds.values():
        total += arr.nbytes
        if arr.dtype.hasobject:
            total += _OBJECT_BYTES * arr.size
    return total


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
        # Queued requests in submit order (entries whose future is done are dead: skipped, popped lazily).
        self._queue: deque[_Request] = deque()
        # Every unresolved request in submit order; with one timeout for all, deadlines are ascending, so a single
        # timer for the oldest one enforces them all (no per-request timer handles on the hot path). Queue-time
        # deadlines are ascending in the queue's order too; only callers' own deadlines need a heap (``_early``).
        self._pending: deque[_Request] = deque()
        self._early: list[tuple[float, int, _Request]] = []
        self._seq = count()
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = math.inf
        # Live queued requests, their rows and input bytes (exact: updated when a request leaves the queue).
        self._queued_n = 0
        self._queued_rows = 0
        self._queued_bytes = 0
        self._rows_limit = config.queue_rows_limit
        self._max_requests = config.max_queue_requests
        self._max_bytes = config.max_queue_bytes
        self._queue_wait_s = config.max_queue_wait_s
        self._queue_wait_inf = math.inf if config.max_queue_wait_s is None else config.max_queue_wait_s
        self._timeout_s = config.timeout_s
        self._row_s = 0.0  # seconds per row of recent batches (moving average): the expected-wait estimate
        self._wait_rows = math.inf  # queued rows that take max_queue_wait_s at that speed
        # Slots reserved by doors and not yet submitted (rows estimated from recent requests), and the waiting room.
        self._reserved_n = 0
        self._reserved_rows = 0
        self._avg_rows = 1.0
        self._waiters: deque[_Waiter] = deque()
        self._waiting_n = 0
        self._max_waiting = (
            _WAITING_PER_QUEUED * config.max_queue_requests
            if config.max_waiting_requests is None
            else config.max_waiting_requests
        )
        self._wait_bound_s = config.max_queue_wait_s if config.max_queue_wait_s is not None else config.timeout_s
        self._refused = self._dropped = self._abandoned = 0
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
        self._fail_waiters()
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
        self._early.clear()
        self._fail_waiters()
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
            queue_depth=self._queued_n,
            in_flight=self._in_flight,
            last=self._last,
            failed_batches=self._failed,
            timeouts=self._timeouts,
            max_batch_rows=self._config.max_batch_rows,
            inline_batches=self._inline_batches,
            queued_rows=self._queued_rows,
            queued_bytes=self._queued_bytes,
            refused=self._refused,
            dropped=self._dropped,
            abandoned=self._abandoned,
            waiting=self._waiting_n,
            reserved=self._reserved_n,
        )

    # ------------------------------------------------------------------ admission

    def check_room(self, rows: int = 1, nbytes: int = 1) -> None:
        """Raise ``Overloaded`` unless a request of ``rows`` rows and ``nbytes`` input bytes would be queued now.

        Costs a few comparisons: doors call it before reading or decoding a body (with the defaults: "is there any
        room at all"), so a refusal costs no decoding. ``submit`` checks again with the exact figures. A task that
        holds a slot here (``SLOT``) has its room already.
        """
        held = self._queued_n + self._reserved_n
        if held and (
            held >= self._max_requests
            or self._queued_rows + self._reserved_rows + rows > self._rows_limit
            or self._queued_bytes + nbytes > self._max_bytes
            or self._queued_rows > self._wait_rows
        ):
            slot = SLOT.get()
            if slot is None or not slot.live or slot._batcher is not self:
                self._refuse(max(rows, 1), max(nbytes, 1))

    def _full(self, n: int, nbytes: int) -> bool:
        """Whether one more request of ``n`` rows and ``nbytes`` bytes does not fit (the queue or its reservations
        are not empty)."""
        return (
            self._queued_n + self._reserved_n >= self._max_requests
            or self._queued_rows + self._reserved_rows + n > self._rows_limit
            or self._queued_bytes + nbytes > self._max_bytes
            or self._queued_rows > self._wait_rows
        )

    def has_room(self) -> bool:
        """Whether a request of the usual size would be queued now (and nobody waits for room before it)."""
        if self._stopping or self._waiting_n:
            return False
        held = self._queued_n + self._reserved_n
        return not held or not (
            held >= self._max_requests
            or self._queued_rows + self._reserved_rows + self._avg_rows > self._rows_limit
            or self._queued_bytes >= self._max_bytes
            or self._queued_rows > self._wait_rows
        )

    def reserve(self) -> Slot | None:
        """A slot for one request of the usual size, when there is room now and nobody waits for it; else ``None``."""
        if self._stopping or self._waiting_n:
            return None
        rows = int(self._avg_rows + 0.5) or 1
        if self._queued_n + self._reserved_n and self._full(rows, 1):
            return None
        return self._slot(rows)

    def _slot(self, rows: int) -> Slot:
        self._reserved_n += 1
        self._reserved_rows += rows
        return Slot(self, rows)

    async def wait_slot(self) -> Slot:
        """A slot, waiting for room when there is none (no read, no decode meanwhile).

        Raises:
            Overloaded: no room within ``max_queue_wait_s`` (``timeout_s`` when unbounded), or too many waiting.
            InferenceTimeout: the caller's ``DEADLINE`` passed first.
            ServerStopping: ``stop()`` was called.
        """
        slot = self.reserve()
        if slot is not None:
            return slot
        if self._stopping:
            raise ServerStopping(f"{self._label} is stopping and accepts no new requests")
        loop = self._loop
        if loop is None:
            raise RuntimeError("Batcher.start() was not called")
        if self._waiting_n >= self._max_waiting:
            if not self._max_waiting:
                self._refuse(int(self._avg_rows + 0.5) or 1, 1)  # no waiting room: say why the queue is full
            self._refused += 1
            raise Overloaded(f"{self._label} has {self._max_waiting} requests waiting for room; retry later")
        now = loop.time()
        deadline, client = now + self._wait_bound_s, DEADLINE.get()
        own = client is not None and client < deadline
        if own:
            assert client is not None
            deadline = client
        waiter = _Waiter(loop.create_future(), now)
        self._waiters.append(waiter)
        self._waiting_n += 1
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter.future
        except BaseException as exc:
            future = waiter.future
            if not future.done() or future.cancelled():  # left the room without a slot
                future.cancel()
                self._waiting_n -= 1
            elif future.exception() is None:  # granted just as the caller left (cancelled, timed out)
                future.result().release()
            if not isinstance(exc, TimeoutError):
                raise
            if own:
                self._timeouts += 1
                raise InferenceTimeout(f"no room in {self._label} before the request's deadline") from None
            self._refused += 1
            raise Overloaded(
                f"{self._label} had no room for this request within {self._wait_bound_s:g}s; retry later"
            ) from None

    def _grant(self) -> None:
        """Hand the room there is to waiting requests: the oldest first, the newest once the oldest waited long."""
        waiters = self._waiters
        if self._stopping:
            self._fail_waiters()
            return
        assert self._loop is not None
        lifo_after = self._loop.time() - _LIFO_AFTER * self._wait_bound_s
        while waiters:
            while waiters and waiters[0].future.done():
                waiters.popleft()
            while waiters and waiters[-1].future.done():
                waiters.pop()
            if not waiters:
                return
            rows = int(self._avg_rows + 0.5) or 1
            if self._queued_n + self._reserved_n and self._full(rows, 1):
                return
            waiter = waiters.pop() if waiters[0].since < lifo_after else waiters.popleft()
            self._waiting_n -= 1
            waiter.future.set_result(self._slot(rows))

    def _fail_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                self._waiting_n -= 1
                waiter.future.set_exception(ServerStopping(f"{self._label} stopped before this request had room"))
        self._waiters.clear()

    def _refuse(self, n: int, nbytes: int) -> None:
        self._refused += 1
        raise Overloaded(self._no_room(n, nbytes) or f"{self._label} is full; retry later")

    def _no_room(self, n: int, nbytes: int) -> str | None:
        """Why one more request of ``n`` rows and ``nbytes`` bytes does not fit (the queue is not empty)."""
        config = self._config
        if self._queued_n >= config.max_queue_requests:
            return f"{self._label} has {config.max_queue_requests} requests queued; retry later"
        if self._queued_rows + n > self._rows_limit:
            return f"{self._label} has {self._queued_rows} rows queued (limit {self._rows_limit}); retry later"
        if self._queued_bytes + nbytes > config.max_queue_bytes:
            return (
                f"{self._label} has {self._queued_bytes} bytes of inputs queued (limit {config.max_queue_bytes}); "
                "retry later"
            )
        if self._queued_rows > self._wait_rows:
            wait = self._queued_rows * self._row_s / config.max_concurrent_batches
            if wait > 0:
                return (
                    f"{self._label} would queue this request for about {wait:.2f}s "
                    f"(limit {self._queue_wait_s}s); retry later"
                )
        return None

    def _unqueue(self, req: _Request) -> None:
        req.queued = False
        self._queued_n -= 1
        self._queued_rows -= req.rows
        self._queued_bytes -= req.nbytes
        if self._waiters:
            self._grant()

    def _forget(self, req: _Request) -> None:
        """A dead entry leaves the queue's deque: if its caller was cancelled and has not resumed yet, account here."""
        if req.queued:
            self._unqueue(req)
            self._abandoned += 1

    def _fail_one(self, req: _Request, exc: Exception) -> None:
        if req.queued:
            self._unqueue(req)
        req.future.set_exception(exc)

    # ------------------------------------------------------------------ requests

    async def submit(self, feeds: Mapping[str, np.ndarray], *, deadline: float | None = None) -> dict[str, np.ndarray]:
        """Queue one request and wait for its rows of the batch result (see ``submit_traced``)."""
        outputs, _ = await self.submit_traced(feeds, deadline=deadline)
        return outputs

    async def submit_traced(
        self, feeds: Mapping[str, np.ndarray], *, deadline: float | None = None
    ) -> tuple[dict[str, np.ndarray], BatchRecord]:
        """Queue one request and wait for its rows of the batch result, with the record of the batch it ran in.

        Args:
            feeds: One array per input; the leading dimension is the request's row count.
            deadline: When the caller stops waiting, on the loop's clock (default: ``DEADLINE``, else none beyond
                ``timeout_s``); a request still queued or running then fails with ``InferenceTimeout``.

        Returns:
            One array per output with the request's rows, and the record of its batch.

        Raises:
            InvalidInput: the inputs disagree on the row count.
            Overloaded: no room in the queue (requests, rows, bytes or expected wait), or dropped after waiting
                ``max_queue_wait_s``.
            InferenceTimeout: no result within ``timeout_s`` or before ``deadline``.
            InferenceFailed: the model raised or returned a malformed result.
            ServerStopping: ``stop()`` was called.

        Cancelling the caller (a client that went away) removes a queued request; it is never run.
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
        nbytes = 0
        for arr in feeds.values():
            nbytes += arr.nbytes
            if arr.dtype.hasobject:
                nbytes += _OBJECT_BYTES * arr.size
        slot = SLOT.get()
        if slot is not None and slot.live and slot._batcher is self:  # admitted by its door: room reserved
            slot.live = False
            self._reserved_n -= 1
            self._reserved_rows -= slot.rows
        else:
            slot = None
            held = self._queued_n + self._reserved_n
            if held and (
                held >= self._max_requests
                or self._queued_rows + self._reserved_rows + n > self._rows_limit
                or self._queued_bytes + nbytes > self._max_bytes
                or self._queued_rows > self._wait_rows
            ):
                self._refuse(n, nbytes)
        self._avg_rows += (n - self._avg_rows) * 0.125
        now = loop.time()
        if deadline is None:
            deadline = DEADLINE.get()
        future: asyncio.Future[tuple[dict[str, np.ndarray], BatchRecord]] = loop.create_future()
        expires = now + self._timeout_s
        req = _Request(feeds, n, shape_key(feeds), future, now, nbytes, expires, now + self._queue_wait_inf)
        if deadline is not None and deadline < expires:
            if deadline <= now:
                self._timeouts += 1
                raise InferenceTimeout(f"the request's deadline passed before {self._label} could queue it")
            req.deadline = deadline
            heapq.heappush(self._early, (deadline, next(self._seq), req))
        self._queue.append(req)
        self._pending.append(req)
        self._queued_n += 1
        self._queued_rows += n
        self._queued_bytes += nbytes
        if len(self._queue) > 2 * self._queued_n + 64:
            self._queue = deque(r for r in self._queue if r.queued)  # drop dead entries left mid-queue
        first = req.deadline if req.deadline < req.queue_deadline else req.queue_deadline
        if first < self._expiry_at:
            self._arm(first)
        if slot is not None and self._waiters and slot.rows > n:
            self._grant()  # it took less room than reserved
        wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            if req.queued:  # the caller went away while the request waited: it leaves the queue, never runs
                self._unqueue(req)
                self._abandoned += 1
            raise

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = when
        self._expiry = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Timer: drop requests past their queue-time bound, fail those past their deadline (both leave the queue
        and never run), then re-arm for the next deadline."""
        assert self._loop is not None
        self._expiry, self._expiry_at = None, math.inf
        now = self._loop.time() + 1e-3  # timers may fire a hair early
        queue, pending, early = self._queue, self._pending, self._early
        next_at = math.inf
        while queue:  # queue-time bound: queue deadlines ascend in the queue's (submit) order
            req = queue[0]
            if req.queued and not req.future.done():
                if req.queue_deadline > now:
                    next_at = req.queue_deadline
                    break
                self._dropped += 1
                self._fail_one(
                    req,
                    Overloaded(f"{self._label} could not start this request within {self._queue_wait_s}s; retry later"),
                )
            queue.popleft()
            self._forget(req)
        while pending:
            req = pending[0]
            if not req.future.done():
                if req.expires > now:
                    next_at = min(next_at, req.expires)
                    break
                self._timeouts += 1
                self._fail_one(req, InferenceTimeout(f"{self._label} gave no result within {self._config.timeout_s}s"))
            pending.popleft()
        while early:
            when, _, req = early[0]
            if not req.future.done():
                if when > now:
                    next_at = min(next_at, when)
                    break
                self._timeouts += 1
                self._fail_one(req, InferenceTimeout(f"{self._label} gave no result before the request's deadline"))
            heapq.heappop(early)
        if next_at < math.inf:
            self._arm(next_at)

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
                req.queued = False
                if not req.future.done():
                    req.future.set_exception(ServerStopping(f"{self._label} stopped before running this request"))
            self._queue.clear()
            self._queued_n = self._queued_rows = self._queued_bytes = 0
            self._fail_waiters()

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
        total = taken_bytes = 0
        key: Hashable = None
        while queue:
            req = queue[0]
            if not req.queued or req.future.done():  # it left: caller gone, timed out or dropped
                queue.popleft()
                self._forget(req)
                continue
            if not batch:
                key = req.key
            elif req.key != key:
                skipped.append(queue.popleft())
                continue
            if batch and total + req.rows > max_rows:
                break
            queue.popleft()
            req.queued = False
            batch.append(req)
            total += req.rows
            taken_bytes += req.nbytes
            if total >= max_rows:
                break
        if skipped:
            queue.extendleft(reversed(skipped))
        if batch:
            self._queued_n -= len(batch)
            self._queued_rows -= total
            self._queued_bytes -= taken_bytes
            if self._waiters:
                self._grant()
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
            if n_rows:
                row_s = run_s / n_rows
                self._row_s = row_s = row_s if not self._row_s else 0.8 * self._row_s + 0.2 * row_s
                if self._queue_wait_s is not None and row_s > 0:
                    self._wait_rows = self._queue_wait_s * self._config.max_concurrent_batches / row_s
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
