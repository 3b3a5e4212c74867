from __future__ import annotations

import asyncio

import anyio
import numpy as np
import pytest

from server.errors import InferenceFailed, InferenceTimeout, InvalidInput, Overloaded, ServerStopping
from server.runtime.batcher import Batcher, BatcherConfig, BatchRecord
from tests.server.runtime.fakes import WAIT_S, FakeRunner, rows_of, running

pytestmark = pytest.mark.anyio


async def settle() -> None:
    """Let every task run until it blocks (submitted requests are queued, the worker is idle or waiting)."""
    with anyio.fail_after(WAIT_S):
        await anyio.wait_all_tasks_blocked()


def expect_double(result: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(result["y"], feeds["x"] * 2)


async def test_single_request() -> None:
    runner = FakeRunner()
    records: list[BatchRecord] = []
    async with running(runner) as batcher:
        batcher.add_listener(records.append)
        feeds = rows_of(3)
        with anyio.fail_after(WAIT_S):
            result = await batcher.submit(feeds)
        expect_double(result, feeds)
        stats = batcher.stats
    assert runner.batch_rows == [3]
    assert (stats.batches, stats.requests, stats.rows, stats.max_rows_seen) == (1, 1, 3, 3)
    assert (stats.queue_depth, stats.in_flight) == (0, 0)
    assert stats.last == records[0]
    assert records[0].rows == 3 and records[0].requests == 1 and records[0].error is None
    assert records[0].run_s >= 0 and records[0].queue_wait_s >= 0


async def test_batches_while_busy() -> None:
    runner = FakeRunner(gated=True)
    records: list[BatchRecord] = []
    async with running(runner) as batcher:
        batcher.add_listener(records.append)
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = [rows_of(i + 1, start=100 * i) for i in range(10)]
        tasks = [asyncio.create_task(batcher.submit(feeds)) for feeds in queued]
        await settle()
        assert batcher.stats.queue_depth == 10
        assert len(runner.calls) == 1
        runner.release()
        with anyio.fail_after(WAIT_S):
            results = await asyncio.gather(*tasks)
            await first
        assert not batcher._pending  # resolved requests are not kept for the deadline timer
    for result, feeds in zip(results, queued, strict=True):
        expect_double(result, feeds)
    assert runner.batch_rows == [1, sum(range(1, 11))]
    assert [r.requests for r in records] == [1, 10]


async def test_max_batch_rows_respected_and_large_request_runs_alone() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_batch_rows=4) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        sizes = [2, 2, 1, 10, 3]
        tasks = [asyncio.create_task(batcher.submit(rows_of(n, start=10 * i))) for i, n in enumerate(sizes)]
        await settle()
        runner.release()
        with anyio.fail_after(WAIT_S):
            results = await asyncio.gather(first, *tasks)
    assert [len(r["y"]) for r in results] == [1, *sizes]
    assert runner.batch_rows == [1, 4, 1, 10, 3]


async def test_incompatible_requests_never_share_a_batch() -> None:
    runner = FakeRunner(lambda feeds: {"y": feeds["x"] * 2}, gated=True)
    async with running(runner) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued: list[dict[str, np.ndarray]] = [
            {"x": np.ones((1, 2), np.float32)},
            {"x": np.ones((2, 3), np.float32)},
            {"x": np.full((1, 2), 5, np.float32)},
            {"x": np.ones((1, 2), np.int64)},
        ]
        tasks = [asyncio.create_task(batcher.submit(feeds)) for feeds in queued]
        await settle()
        runner.release()
        with anyio.fail_after(WAIT_S):
            results = await asyncio.gather(first, *tasks)
    for result, feeds in zip(results[1:], queued, strict=True):
        expect_double(result, feeds)
        assert result["y"].dtype == feeds["x"].dtype
    # oldest first; the (.,2) float rows go together, the (.,3) and int64 requests each alone, in order
    assert [(c["x"].shape, c["x"].dtype.name) for c in runner.calls[1:]] == [
        ((2, 2), "float32"),
        ((2, 3), "float32"),
        ((1, 2), "int64"),
    ]


async def test_cancelled_request_is_skipped() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        gone = asyncio.create_task(batcher.submit(rows_of(5)))
        kept = asyncio.create_task(batcher.submit(rows_of(2, start=50)))
        await settle()
        gone.cancel()
        await settle()
        runner.release()
        with anyio.fail_after(WAIT_S):
            expect_double(await kept, rows_of(2, start=50))
            await first
        with pytest.raises(asyncio.CancelledError):
            await gone
    assert runner.batch_rows == [1, 2]


async def test_run_batch_exception_fails_that_batch_only() -> None:
    def flaky(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (feeds["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": feeds["x"] * 2}

    runner = FakeRunner(flaky, gated=True)
    records: list[BatchRecord] = []
    async with running(runner) as batcher:
        batcher.add_listener(records.append)
        bad = [asyncio.create_task(batcher.submit({"x": -np.ones((1, 2), np.float32)})) for _ in range(2)]
        await runner.entered(1)
        runner.release()
        with anyio.fail_after(WAIT_S):
            errors = await asyncio.gather(*bad, return_exceptions=True)
            ok = await batcher.submit(rows_of(2))
        stats = batcher.stats
    for err in errors:
        assert isinstance(err, InferenceFailed)
        assert "negative input" in str(err)
        assert isinstance(err.__cause__, ValueError)
    assert errors[0] is not errors[1]
    expect_double(ok, rows_of(2))
    assert stats.failed_batches == 1 and stats.batches == 2
    assert records[0].error is not None and records[1].error is None


async def test_output_row_mismatch_fails_naming_the_output() -> None:
    runner = FakeRunner(lambda feeds: {"y": feeds["x"] * 2, "proba": np.zeros(1)})
    async with running(runner) as batcher:
        with anyio.fail_after(WAIT_S), pytest.raises(InferenceFailed, match="'proba' has 1 rows but the batch has 3"):
            await batcher.submit(rows_of(3))


async def test_invalid_request_rejected() -> None:
    runner = FakeRunner()
    async with running(runner) as batcher:
        with pytest.raises(InvalidInput, match="disagree"):
            await batcher.submit({"a": np.ones((2, 1)), "b": np.ones((3, 1))})
    assert runner.calls == []


async def test_overloaded_when_queue_full() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_queue_requests=2) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = [asyncio.create_task(batcher.submit(rows_of(1))) for _ in range(2)]
        await settle()
        with anyio.fail_after(WAIT_S), pytest.raises(Overloaded, match="2 requests queued"):
            await batcher.submit(rows_of(1))
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, *queued)
    assert runner.batch_rows == [1, 2]


async def test_timeout_while_queued_is_not_run() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, timeout_s=0.2) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(4)))
        with anyio.fail_after(WAIT_S):
            with pytest.raises(InferenceTimeout, match=r"within 0.2s"):
                await queued
            with pytest.raises(InferenceTimeout):
                await first
        runner.release()
        with anyio.fail_after(WAIT_S):
            await batcher.submit(rows_of(2))
        assert batcher.stats.timeouts == 2
    assert runner.batch_rows == [1, 2]


async def test_stop_drains_in_flight_and_queued_and_refuses_new() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(2, start=9)))
        await settle()
        stopping = asyncio.create_task(batcher.stop())
        await settle()
        assert not batcher.running
        with pytest.raises(ServerStopping):
            await batcher.submit(rows_of(1))
        assert not stopping.done()
        runner.release()
        with anyio.fail_after(WAIT_S):
            await stopping
        expect_double(await first, rows_of(1))
        expect_double(await queued, rows_of(2, start=9))
    assert runner.batch_rows == [1, 2]
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        await batcher.start()


async def test_stop_timeout_fails_what_is_left() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        queued = asyncio.create_task(batcher.submit(rows_of(2)))
        await settle()
        with anyio.fail_after(WAIT_S):
            await batcher.stop(timeout_s=0.05)
        for task in (first, queued):
            with pytest.raises(ServerStopping):
                await task
    assert runner.batch_rows == [1]


async def test_two_batches_in_flight() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_concurrent_batches=2) as batcher:
        tasks = [asyncio.create_task(batcher.submit(rows_of(1)))]
        await runner.entered(1)
        tasks.append(asyncio.create_task(batcher.submit(rows_of(3))))
        await runner.entered(2)
        assert runner.max_active == 2
        assert batcher.stats.in_flight == 2
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(*tasks)
    assert runner.batch_rows == [1, 3]


async def test_max_delay_collects_while_busy() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_concurrent_batches=2, max_delay_ms=60_000) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        tasks = [asyncio.create_task(batcher.submit(rows_of(1, start=i))) for i in range(3)]
        await settle()
        assert len(runner.calls) == 1  # a slot is free, but the worker waits for more while the first batch runs
        runner.release()  # the runtime goes idle: the collected batch leaves at once
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, *tasks)
    assert runner.batch_rows == [1, 3]


async def test_max_delay_ends_when_batch_is_full() -> None:
    runner = FakeRunner(gated=True)
    async with running(runner, max_concurrent_batches=2, max_delay_ms=60_000, max_batch_rows=4) as batcher:
        first = asyncio.create_task(batcher.submit(rows_of(1)))
        await runner.entered(1)
        tasks = [asyncio.create_task(batcher.submit(rows_of(2, start=i))) for i in range(2)]
        await runner.entered(2)  # 4 rows queued: dispatched without waiting for the delay or the first batch
        assert runner.batch_rows == [1, 4]
        runner.release()
        with anyio.fail_after(WAIT_S):
            await asyncio.gather(first, *tasks)


async def test_listener_errors_do_not_break_serving(caplog: pytest.LogCaptureFixture) -> None:
    runner = FakeRunner()
    seen: list[int] = []

    def broken(record: BatchRecord) -> None:
        raise RuntimeError("listener bug")

    async with running(runner) as batcher:
        batcher.add_listener(broken)
        batcher.add_listener(lambda record: seen.append(record.rows))
        with anyio.fail_after(WAIT_S):
            await batcher.submit(rows_of(2))
            await batcher.submit(rows_of(1))
    assert seen == [2, 1]
    assert "listener" in caplog.text


async def test_submit_before_start_and_config_validation() -> None:
    batcher = Batcher(FakeRunner(), BatcherConfig())
    assert not batcher.running
    with pytest.raises(RuntimeError, match="start"):
        await batcher.submit(rows_of(1))
    await batcher.stop()
    with pytest.raises(ValueError, match="max_batch_rows"):
        BatcherConfig(max_batch_rows=0)
    with pytest.raises(ValueError, match="timeout_s"):
        BatcherConfig(timeout_s=0)
