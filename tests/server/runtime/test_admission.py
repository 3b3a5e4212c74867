"""Admission by cost: queued rows and bytes, the expected wait, the queue-time bound, callers' deadlines, and
requests whose caller went away: none of the refused, dropped, expired or abandoned requests ever runs."""

from __future__ import annotations

import asyncio
import itertools
import types

import anyio
import numpy as np
import pytest

from server.errors import InferenceTimeout, Overloaded, ServerStopping
from server.runtime import batcher as batcher_module
from server.runtime.batcher import DEADLINE, SLOT, Batcher, BatcherConfig, input_bytes
from tests.server.runtime.fakes import WAIT_S, FakeRunner, rows_of, running

pytestmark = pytest.mark.anyio


async def settle() -> None:
    with anyio.fail_after(WAIT_S):
        await anyio.wait_all_tasks_blocked()


async def test_queued_rows_are_bounded_and_a_large_request_still_runs_alone() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_rows=8) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = [asyncio.create_task(batcher.submit(rows_of(n))) for n in (5, 3)]
        await settle()
        assert (batcher.stats.queue_depth, batcher.stats.queued_rows) == (2, 8)
        with pytest.raises(Overloaded, match=r"8 rows queued \(limit 8\)"):
            await batcher.submit(rows_of(1))
        assert batcher.stats.refused == 1
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, *queued)
            big = await batcher.submit(rows_of(20))  # larger than the bound, but nothing waits: it runs
        assert big["y"].shape == (20, 2)
    assert runner.batch_rows == [1, 8, 20]


async def test_queued_bytes_are_bounded() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_bytes=100) as batcher:  # rows_of: 8 bytes a row
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(10)))
        await settle()
        assert batcher.stats.queued_bytes == 80
        with pytest.raises(Overloaded, match=r"80 bytes of inputs queued \(limit 100\)"):
            await batcher.submit(rows_of(4))
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued)
    assert runner.batch_rows == [1, 10]


def test_input_bytes_estimates_object_arrays() -> None:
    feeds = {"x": np.zeros((3, 2), np.float32), "tag": np.array(["a", "b", "c"], dtype=object)}
    assert input_bytes(feeds) == 24 + 3 * 8 + 3 * 64


async def test_check_room_refuses_before_any_decoding_only_when_something_waits() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=1) as batcher:
        batcher.check_room(rows=10_000, nbytes=10**12)  # an empty queue takes anything
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        batcher.check_room()  # running is not queued
        queued = asyncio.create_task(batcher.submit(rows_of(1)))
        await settle()
        with pytest.raises(Overloaded, match="1 requests queued"):
            batcher.check_room()
        assert batcher.stats.refused == 1
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued)
        batcher.check_room()


async def test_a_cancelled_caller_frees_its_room_at_once_and_never_runs() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_rows=5) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        gone = asyncio.create_task(batcher.submit(rows_of(5, start=100)))
        await settle()
        with pytest.raises(Overloaded):
            batcher.check_room()
        gone.cancel()
        await settle()
        stats = batcher.stats
        assert (stats.queue_depth, stats.queued_rows, stats.queued_bytes, stats.abandoned) == (0, 0, 0, 1)
        batcher.check_room(rows=5)
        kept = asyncio.create_task(batcher.submit(rows_of(5)))
        await settle()
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, kept)
        with pytest.raises(asyncio.CancelledError):
            await gone
    assert runner.batch_rows == [1, 5]
    assert all(call["x"].min() < 100 for call in runner.calls)


async def test_a_request_cancelled_just_before_dispatch_is_not_run() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        gone = asyncio.create_task(batcher.submit(rows_of(3, start=100)))
        await settle()
        gone.cancel()  # its future is cancelled now; the task resumes (and un-queues it) one loop step later
        runner.release()
        with anyio.fail_after(WAIT_S):
            await first
            await batcher.submit(rows_of(2))
        assert batcher.stats.abandoned == 1 and batcher.stats.queued_rows == 0
    assert runner.batch_rows == [1, 2]


async def test_a_request_waiting_past_the_queue_bound_is_dropped_not_run() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_wait_s=0.05) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        with anyio.fail_after(WAIT_S), pytest.raises(Overloaded, match=r"could not start this request within 0.05s"):
            await batcher.submit(rows_of(4))
        assert (batcher.stats.dropped, batcher.stats.queued_rows) == (1, 0)
        runner.release()
        with anyio.fail_after(WAIT_S):
            await first
    assert runner.batch_rows == [1]


async def test_expected_wait_past_the_bound_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count(step=10.0)  # every batch "runs" 10 s: one queued row means a 10 s wait
    monkeypatch.setattr(batcher_module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_wait_s=5.0, inline_below_ms=0) as batcher:
        learn = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        runner.release()
        with anyio.fail_after(WAIT_S):
            await learn
        runner.gate.clear()
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(2)
        queued = asyncio.create_task(batcher.submit(rows_of(1)))  # an empty queue takes it
        await settle()
        with pytest.raises(Overloaded, match=r"would queue this request for about 10.00s \(limit 5.0s\)"):
            batcher.check_room()
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued)
    assert runner.batch_rows == [1, 1, 1]


async def test_a_callers_deadline_fails_the_request_and_it_never_runs() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner) as batcher:
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)

        async def with_header_deadline() -> object:
            DEADLINE.set(loop.time() + 0.05)  # what a door sets from X-Request-Timeout-Ms, for this task only
            return await batcher.submit(rows_of(2))

        with anyio.fail_after(WAIT_S):
            with pytest.raises(InferenceTimeout, match="before the request's deadline"):
                await asyncio.create_task(with_header_deadline())
            with pytest.raises(InferenceTimeout, match="before the request's deadline"):
                await batcher.submit(rows_of(3), deadline=loop.time() + 0.05)
        assert DEADLINE.get() is None
        with pytest.raises(InferenceTimeout, match="deadline passed before"):
            await batcher.submit(rows_of(1), deadline=loop.time() - 1)
        assert batcher.stats.timeouts == 3 and batcher.stats.queued_rows == 0
        runner.release()
        with anyio.fail_after(WAIT_S):
            await first
    assert runner.batch_rows == [1]


def test_config_validation() -> None:
    assert BatcherConfig(max_batch_rows=64).queue_rows_limit == 1024
    assert BatcherConfig(max_queue_rows=10).queue_rows_limit == 10
    for bad in ({"max_queue_rows": 0}, {"max_queue_bytes": 0}, {"max_queue_wait_s": 0}):
        with pytest.raises(ValueError):
            BatcherConfig(**bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- slots and the waiting room


async def test_a_slot_is_room_the_submit_takes_without_another_check() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=1) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        slot = batcher.reserve()
        assert slot is not None and batcher.stats.reserved == 1
        assert batcher.reserve() is None  # the reservation fills the queue
        with pytest.raises(Overloaded):
            await batcher.submit(rows_of(1))  # no slot: refused

        async def with_slot() -> dict[str, np.ndarray]:
            SLOT.set(slot)
            batcher.check_room()  # its own room
            return await batcher.submit(rows_of(1, start=10))

        queued = asyncio.create_task(with_slot())
        await settle()
        assert (batcher.stats.reserved, batcher.stats.queue_depth) == (0, 1)
        slot.release()  # used already: nothing to give back
        assert batcher.stats.reserved == 0
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued)
        spare = batcher.reserve()
        assert spare is not None
        spare.release()
        spare.release()
        assert batcher.stats.reserved == 0


async def test_waiting_requests_get_room_in_order_when_it_frees() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=1) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(1)))
        await settle()
        order: list[str] = []

        async def wait(name: str) -> None:
            slot = await batcher.wait_slot()
            order.append(name)
            SLOT.set(slot)
            await batcher.submit(rows_of(1))

        waiting = [asyncio.create_task(wait(name)) for name in ("a", "b", "c")]
        await settle()
        assert (batcher.stats.waiting, order) == (3, [])
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued, *waiting)
        stats = batcher.stats
    assert order == ["a", "b", "c"]
    assert (stats.waiting, stats.reserved, stats.refused) == (0, 0, 0)


async def test_the_newest_go_first_once_the_oldest_waited_long() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=1) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(1)))
        await settle()
        order: list[str] = []

        async def wait(name: str) -> None:
            slot = await batcher.wait_slot()
            order.append(name)
            slot.release()

        waiting = [asyncio.create_task(wait(name)) for name in ("old", "new")]
        await settle()
        batcher._waiters[0].since -= 60.0  # the oldest has waited a minute (past a quarter of max_queue_wait_s)
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued, *waiting)
    assert order == ["new", "old"]


async def test_waiting_is_bounded_in_time_and_in_number() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=1, max_waiting_requests=1) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(1)))
        await settle()
        loop = asyncio.get_running_loop()

        async def waits_until(deadline: float) -> object:
            DEADLINE.set(deadline)
            return await batcher.wait_slot()

        waiter = asyncio.create_task(waits_until(loop.time() + 60))
        await settle()
        with pytest.raises(Overloaded, match="1 requests waiting for room"):
            await batcher.wait_slot()
        waiter.cancel()  # a client that goes away leaves the waiting room
        await settle()
        assert batcher.stats.waiting == 0
        with anyio.fail_after(WAIT_S), pytest.raises(InferenceTimeout, match=r"no room .* before the request's"):
            await waits_until(loop.time() + 0.05)
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued)
        assert (batcher.stats.waiting, batcher.stats.reserved) == (0, 0)


async def test_the_waiting_room_times_out_with_overloaded() -> None:
    """Room that never frees (the queue held by requests submitted without slots, the runtime stuck)."""
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=1, max_queue_wait_s=0.1) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(1)))
        await settle()
        with anyio.fail_after(WAIT_S), pytest.raises(Overloaded):
            slot = await batcher.wait_slot()  # the queued one is dropped at 0.1 s: room for this one then
            SLOT.set(slot)
            await batcher.submit(rows_of(1))  # and it is dropped in turn: the runtime is still stuck
        runner.release()
        with anyio.fail_after(WAIT_S):
            await first
            with pytest.raises(Overloaded):
                await queued
        assert batcher.stats.dropped == 2


async def test_no_waiting_room_refuses_with_the_queues_reason() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=1, max_waiting_requests=0) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(1)))
        await settle()
        with pytest.raises(Overloaded, match="1 requests queued"):
            await batcher.wait_slot()
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, queued)


async def test_stop_fails_the_waiting_room() -> None:
    runner = FakeRunner(gated=True)
    batcher = Batcher(runner, BatcherConfig(max_queue_requests=1), name="t")
    await batcher.start()
    first = asyncio.create_task(batcher.submit(rows_of(1)))
    await runner.entered(1)
    queued = asyncio.create_task(batcher.submit(rows_of(1)))
    await settle()
    waiter = asyncio.create_task(batcher.wait_slot())
    await settle()
    stopping = asyncio.create_task(batcher.stop(timeout_s=WAIT_S))
    await settle()
    runner.release()
    with anyio.fail_after(WAIT_S):
        await stopping
        await asyncio.gather(first, queued)
        with pytest.raises(ServerStopping):
            await waiter
