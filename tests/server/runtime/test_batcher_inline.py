"""Cheap batches run on the event loop once their size class is known to be cheap; others stay on the thread."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import pytest

from server.errors import InferenceFailed
from server.runtime.batcher import Batcher, BatcherConfig

pytestmark = pytest.mark.anyio


class ThreadRecorder:
    """Doubles ``x`` and records which thread ran each batch; negative input raises."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        if (feeds["x"] < 0).any():
            raise ValueError("negative")
        return {"y": feeds["x"] * 2}


async def _run(config: BatcherConfig, inputs: list[np.ndarray]) -> tuple[ThreadRecorder, Batcher, list[object]]:
    recorder = ThreadRecorder()
    batcher = Batcher(recorder, config, name="inline")
    await batcher.start()
    results: list[object] = []
    try:
        for x in inputs:  # one at a time: every request is a batch of its own
            try:
                results.append((await batcher.submit({"x": x}))["y"].tolist())
            except InferenceFailed as exc:
                results.append(exc)
    finally:
        await batcher.stop()
    return recorder, batcher, results


async def test_after_eight_cheap_runs_a_size_class_runs_inline() -> None:
    loop_thread = threading.get_ident()
    one = [np.array([[float(i)]]) for i in range(12)]
    recorder, batcher, results = await _run(BatcherConfig(inline_below_ms=10_000), one)
    assert results == [[[2.0 * i]] for i in range(12)]
    assert all(t != loop_thread for t in recorder.threads[:8])
    assert all(t == loop_thread for t in recorder.threads[8:])
    assert batcher.stats.inline_batches == 4


async def test_new_size_classes_are_measured_on_the_thread_first() -> None:
    loop_thread = threading.get_ident()
    inputs = [np.ones((1, 1))] * 8 + [np.ones((100, 1))]
    recorder, _, _ = await _run(BatcherConfig(inline_below_ms=10_000), inputs)
    assert recorder.threads[-1] != loop_thread


@pytest.mark.parametrize("config", [BatcherConfig(inline_below_ms=0), BatcherConfig(max_concurrent_batches=2)])
async def test_never_inline_when_off_or_with_several_batches_in_flight(config: BatcherConfig) -> None:
    loop_thread = threading.get_ident()
    recorder, batcher, _ = await _run(config, [np.ones((1, 1))] * 12)
    assert loop_thread not in recorder.threads and batcher.stats.inline_batches == 0


async def test_an_inline_failure_fails_its_requests_and_the_batcher_keeps_serving() -> None:
    inputs = [np.ones((1, 1))] * 9 + [-np.ones((1, 1)), np.ones((1, 1))]
    _, batcher, results = await _run(BatcherConfig(inline_below_ms=10_000), inputs)
    assert isinstance(results[9], InferenceFailed) and "negative" in str(results[9])
    assert results[10] == [[2.0]]
    assert batcher.stats.failed_batches == 1 and batcher.stats.inline_batches == 3


def test_inline_threshold_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="inline_below_ms"):
        BatcherConfig(inline_below_ms=-1)
