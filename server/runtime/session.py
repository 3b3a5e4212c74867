"""Sessions: something that turns a batch of named input arrays into named output arrays.

``OnnxSession`` wraps an onnxruntime ``InferenceSession``; ``PyfuncSession`` wraps a python callable (the fallback
when a model could not be converted). Both satisfy the ``Session`` protocol the batcher and the service rely on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from server.runtime.providers import CPU, select_providers

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto

logger = logging.getLogger(__name__)

ML_DOMAIN = "ai.onnx.ml"
# Default-domain operators that work on strings (no CUDA kernels).
STRING_OPS = frozenset(
    {"StringNormalizer", "TfIdfVectorizer", "RegexFullMatch", "StringConcat", "StringSplit", "LabelEncoder"}
)
# Operators worth a GPU: a graph with any of these stays on CUDA even when it also has a few ai.onnx.ml nodes.
HEAVY_OPS = frozenset(
    {
        "Conv", "ConvTranspose", "ConvInteger", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "QLinearConv",
        "Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention",
    }
)  # fmt: skip

_ORT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}


@dataclass(frozen=True, slots=True)
class InputInfo:
    """One model input as the runtime expects it.

    Attributes:
        name: Input name.
        dtype: numpy dtype to feed (``object`` for strings and non-tensor inputs).
        shape: Dimensions; ``None`` or a symbolic name (``str``) for dynamic ones.
        onnx_type: onnxruntime's type string, e.g. ``"tensor(float)"``.
    """

    name: str
    dtype: np.dtype[Any]
    shape: list[int | str | None]
    onnx_type: str


@runtime_checkable
class Session(Protocol):
    """What the batcher and the service need from a loaded model."""

    provider: str
    placement_reason: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (batched) call; every output has the same leading dimension as the inputs."""
        ...


class OnnxSession:
    """An onnxruntime session set up for serving.

    Graph optimizations are fully on and execution is sequential (parallelism comes from intra-op threads and from
    batching). ``run`` may be called from several threads at once.

    Attributes:
        provider: The execution provider actually serving (``"CUDAExecutionProvider"`` or ``"CPUExecutionProvider"``).
        placement_reason: Why that provider was chosen.
        inputs: Input name to ``InputInfo``, in model order.
        input_names: Input names, in model order.
        output_names: Output names, in model order.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        providers: str = "auto",
        intra_op_threads: int | None = None,
        cpu_only_ops: bool = True,
        allow_spinning: bool = False,
    ) -> None:
        """Load a model.

        Args:
            model: Path to an ``.onnx`` file (external data next to it is found) or the serialized model.
            providers: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see ``select_providers``).
            intra_op_threads: Threads per operator; ``None`` lets onnxruntime decide (one per physical core).
            cpu_only_ops: Place graphs made of ``ai.onnx.ml``/string operators (tree ensembles, encoders, ...) or
                with string inputs on the CPU even when CUDA is available: CUDA has no kernels for them.
            allow_spinning: Let idle intra-op threads spin-wait for the next run (onnxruntime's default). Off by
                default: between batches the spinning threads burn the cores the event loop needs to decode the
                next requests (1.6x the 1-row and 2.7x the 1024-row throughput on a busy 2-core machine without
                them, docs/performance.md).
        """
        wanted = select_providers(providers)
        if wanted[0] == CPU:
            reason = "CUDA not requested" if providers.strip().lower() == "cpu" else "CUDA unavailable"
        else:
            reason = "CUDA available"
            cpu_reason = _cpu_placement_reason(_load_proto(model)) if cpu_only_ops else None
            if cpu_reason is not None:
                wanted, reason = [CPU], cpu_reason

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: node-placement warnings are expected for mixed graphs
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        source = model if isinstance(model, bytes) else str(model)
        self._session = ort.InferenceSession(source, options, providers=wanted)

        self.provider: str = self._session.get_providers()[0]
        if self.provider != wanted[0]:
            reason = f"{wanted[0]} could not be used; onnxruntime fell back"
        self.placement_reason: str = reason
        self.inputs: dict[str, InputInfo] = {
            arg.name: InputInfo(arg.name, _ORT_DTYPES.get(arg.type, np.dtype(object)), list(arg.shape), arg.type)
            for arg in self._session.get_inputs()
        }
        self.input_names: list[str] = list(self.inputs)
        self.output_names: list[str] = [arg.name for arg in self._session.get_outputs()]
        logger.info(
            "onnx session ready on %s (%s): inputs=%s outputs=%s",
            self.provider,
            reason,
            self.input_names,
            self.output_names,
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            feeds: One array per input name.

        Returns:
            One array per output name. Non-tensor outputs (e.g. a ZipMap's list of dicts) come back as 1-D object
            arrays so they can be split by row like the others.
        """
        results = self._session.run(self.output_names, dict(feeds))
        return {name: _as_array(value) for name, value in zip(self.output_names, results, strict=True)}

    def __repr__(self) -> str:
        return f"OnnxSession(provider={self.provider!r}, inputs={self.input_names}, outputs={self.output_names})"


class PyfuncSession:
    """A python callable behind the ``Session`` interface (calls are serialized with a lock).

    Attributes:
        provider: Always ``"python"``.
        placement_reason: Why it runs in python (as given).
    """

    provider = "python"

    def __init__(
        self,
        fn: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
        *,
        input_names: list[str],
        output_names: list[str],
        placement_reason: str = "python model",
    ) -> None:
        """Wrap ``fn``.

        Args:
            fn: Takes one array per input name and returns (at least) one array per output name.
            input_names: Names ``fn`` expects.
            output_names: Names ``run`` returns, in this order.
            placement_reason: Why this model is served in python (e.g. the conversion failure).
        """
        self._fn = fn
        self._lock = threading.Lock()
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.placement_reason = placement_reason

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the function and pick the declared outputs (``KeyError`` if one is missing)."""
        with self._lock:
            result = self._fn(feeds)
        return {name: _as_array(result[name]) for name in self.output_names}

    def __repr__(self) -> str:
        return f"PyfuncSession(inputs={self.input_names}, outputs={self.output_names})"


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list) and value and not isinstance(value[0], int | float | str | bool | list):
        out = np.empty(len(value), dtype=object)  # e.g. ZipMap's list of dicts
        out[:] = value
        return out
    return np.asarray(value)


def _load_proto(model: str | Path | bytes) -> ModelProto:
    import onnx

    if isinstance(model, bytes):
        return onnx.load_model_from_string(model)
    return onnx.load_model(str(model), load_external_data=False)


def _cpu_placement_reason(model: ModelProto) -> str | None:
    """Say why ``model`` should run on the CPU even though CUDA is available, or ``None``."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    string_io = [
        v.name
        for v in [*graph.input, *graph.output]
        if v.name not in initializers and v.type.tensor_type.elem_type == 8  # TensorProto.STRING
    ]
    if string_io:
        return f"string inputs/outputs {string_io} need CPU kernels"
    cpu_ops = sorted({op for domain, op in _ops(graph) if domain == ML_DOMAIN or op in STRING_OPS})
    if cpu_ops and not any(op in HEAVY_OPS for _, op in _ops(graph)):
        return f"graph uses ai.onnx.ml/string operators {cpu_ops} that have no CUDA kernels"
    return None


def _ops(graph: GraphProto) -> Iterator[tuple[str, str]]:
    """(domain, op_type) of every node, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.node:
        yield node.domain, node.op_type
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _ops(attr.g)
            for sub in attr.graphs:
                yield from _ops(sub)
