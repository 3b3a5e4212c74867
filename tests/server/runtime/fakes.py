"""Test doubles and tiny ONNX models for the runtime tests."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np
import onnx
from onnx import TensorProto, helper

from server.runtime.batcher import Batcher, BatcherConfig

WAIT_S = 10.0
"""Upper bound for every wait in these tests (they normally finish in milliseconds)."""


def double(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": feeds["x"] * 2}


class FakeRunner:
    """A ``run_batch`` that records its calls and, when gated, blocks until ``release()``."""

    def __init__(self, fn: Callable[[dict[str, np.ndarray]], Mapping[str, Any]] = double, *, gated: bool = False):
        self.fn = fn
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.calls: list[dict[str, np.ndarray]] = []
        self.active = 0
        self.max_active = 0
        self._cond = threading.Condition()

    def __call__(self, feeds: dict[str, np.ndarray]) -> Mapping[str, Any]:
        with self._cond:
            self.calls.append(feeds)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._cond.notify_all()
        try:
            if not self.gate.wait(WAIT_S):
                raise RuntimeError("test gate never opened")
            return self.fn(feeds)
        finally:
            with self._cond:
                self.active -= 1

    def release(self) -> None:
        self.gate.set()

    async def entered(self, n: int) -> None:
        """Wait until ``n`` batches have started running."""

        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(lambda: len(self.calls) >= n, WAIT_S)

        assert await anyio.to_thread.run_sync(wait), f"only {len(self.calls)} of {n} batches started"

    @property
    def batch_rows(self) -> list[int]:
        return [len(next(iter(call.values()))) for call in self.calls]


@asynccontextmanager
async def running(runner: FakeRunner, **config: Any) -> AsyncIterator[Batcher]:
    """A started batcher over ``runner``; on exit the gate opens and the batcher stops (bounded)."""
    batcher = Batcher(runner, BatcherConfig(**config), name="test")
    await batcher.start()
    try:
        yield batcher
    finally:
        runner.release()
        await batcher.stop(timeout_s=WAIT_S)


def rows_of(n: int, start: float = 0.0, width: int = 2) -> dict[str, np.ndarray]:
    """``n`` distinct float32 rows."""
    x = np.arange(start, start + n * width, dtype=np.float32).reshape(n, width)
    return {"x": x}


# ---------------------------------------------------------------- ONNX models


def _model(graph: onnx.GraphProto, *, ml: bool = False) -> bytes:
    opsets = [helper.make_opsetid("", 17)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def add_model(width: int = 3) -> bytes:
    """``y = x + [1, 2, ...]`` on float32 ``[batch, width]``."""
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [width], [float(i + 1) for i in range(width)])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[bias],
    )
    return _model(graph)


MATMUL_W = np.arange(6, dtype=np.float32).reshape(3, 2)


def matmul_model() -> bytes:
    """``y = x @ MATMUL_W`` on float32 ``[N, 3]`` (first dim unnamed)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], MATMUL_W.ravel().tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[w],
    )
    return _model(graph)


LABELS = {"red": 0, "green": 1, "blue": 2}


def label_encoder_model() -> bytes:
    """ai.onnx.ml LabelEncoder: string ``[N]`` -> int64 ``[N]`` (unknown -> -1)."""
    node = helper.make_node(
        "LabelEncoder",
        ["color"],
        ["code"],
        domain="ai.onnx.ml",
        keys_strings=list(LABELS),
        values_int64s=list(LABELS.values()),
        default_int64=-1,
    )
    graph = helper.make_graph(
        [node],
        "label_encoder",
        [helper.make_tensor_value_info("color", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("code", TensorProto.INT64, [None])],
    )
    return _model(graph, ml=True)


def scaler_model(*, with_matmul: bool = False) -> bytes:
    """ai.onnx.ml Scaler on float ``[N, 3]``, optionally followed by a MatMul."""
    nodes = [helper.make_node("Scaler", ["x"], ["s"], domain="ai.onnx.ml", offset=[1.0] * 3, scale=[2.0] * 3)]
    inits = []
    out, out_shape = "s", [None, 3]
    if with_matmul:
        inits.append(helper.make_tensor("w", TensorProto.FLOAT, [3, 2], MATMUL_W.ravel().tolist()))
        nodes.append(helper.make_node("MatMul", ["s", "w"], ["y"]))
        out, out_shape = "y", [None, 2]
    graph = helper.make_graph(
        nodes,
        "scaler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    return _model(graph, ml=True)
