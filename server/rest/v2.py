"""Open Inference Protocol v2 (KServe / Triton / MLServer) over the same service, so tritonclient and perf_analyzer
can drive modelport.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}[/versions/{v}]`` (metadata), ``.../ready``,
``.../config`` (Triton's model configuration: ``max_batch_size`` is the batcher's ``max_batch_rows``) and
``POST .../infer`` with JSON tensors or Triton's binary tensor extension. Each signature column is one v2 input
(shape ``[-1, 1]``, or ``[-1, *shape]`` for tensor columns); outputs are ``predictions`` and, for classifiers,
``label`` and ``probabilities``. Errors answer ``{"error": message, "error_code", "field"}`` with the status of the
MLflow routes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.columns import show_names
from server.deployments import DeploymentInfo
from server.errors import InferenceFailed, InvalidInput, ServingError
from server.prediction import Prediction
from server.rest.errors import headers_of, status_of
from server.rest.routes import note_prediction, read_body
from server.service import InferenceService
from server.tensors import decode_infer, encode_infer, v2_datatype

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

HEADER_LENGTH = "inference-header-content-length"
#: Bodies larger than this are decoded in a worker thread.
_THREAD_DECODE_BYTES = 256 * 1024
_V2_OF_TYPE = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
_EXTENSIONS = ["binary_tensor_data", "model_configuration"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A v2 answer, ready for any transport."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=self.content_type, headers=self.headers)


def error_reply(exc: ServingError, request_id: str | None = None) -> Reply:
    """A serving error in the v2 shape (``error`` is what tritonclient reads), with the REST status."""
    message = exc.message
    if isinstance(exc, InferenceFailed):
        log.error("inference failed", exc_info=exc.__cause__ or exc, extra={"request_id": request_id})
        message = f"{message} (request id {request_id})"
    body: dict[str, Any] = {"error": message, "error_code": exc.error_code, "message": message}
    if exc.field:
        body["field"] = exc.field
    if request_id:
        body["request_id"] = request_id
    return Reply(orjson.dumps(body), status_of(exc), headers=headers_of(exc) or {})


async def infer(
    service: InferenceService,
    name: str,
    version_or_alias: str | None,
    body: bytes,
    header_length: str | None,
    state: dict[str, Any],
) -> Reply:
    """Score one v2 ``infer`` request; ``header_length`` is the ``Inference-Header-Content-Length`` header."""
    length: int | None = None
    if header_length is not None:
        if not (header_length.strip().isascii() and header_length.strip().isdigit()):
            raise InvalidInput(f"{HEADER_LENGTH} must be a byte count", field="Inference-Header-Content-Length")
        length = int(header_length)
    if len(body) > _THREAD_DECODE_BYTES:
        request = await asyncio.to_thread(decode_infer, body, length)
    else:
        request = decode_infer(body, length)
    prediction = await service.predict_columns(name, version_or_alias, request.inputs)
    note_prediction(state, prediction)
    outputs = _outputs(prediction)
    if request.outputs:
        unknown = sorted(set(request.outputs) - set(outputs))
        if unknown:
            raise InvalidInput(
                f"unknown output(s) {show_names(unknown)}; the model gives {show_names(list(outputs))}", field="outputs"
            )
        outputs = {k: outputs[k] for k in request.outputs}
        binary = {k for k, wants in request.outputs.items() if wants}
    else:
        binary = set(outputs) if request.binary_output else set()
    data, head = encode_infer(prediction.name, prediction.version, request.id, outputs, binary)
    if head is None:
        return Reply(data)
    return Reply(data, content_type="application/octet-stream", headers={HEADER_LENGTH: str(head)})


def _outputs(prediction: Prediction) -> dict[str, np.ndarray]:
    out = {"predictions": prediction.predictions}
    if prediction.label is not None:
        out["label"] = prediction.label
    if prediction.probabilities is not None:
        out["probabilities"] = prediction.probabilities
    return out


# -- metadata ---------------------------------------------------------------------------------------------------------


def model_metadata(info: DeploymentInfo) -> dict[str, Any]:
    """The v2 model metadata: one input per signature column, and the outputs ``infer`` answers with, typed as the
    runtime produces them (an ONNX graph computing in float32 answers ``FP32`` even where the MLflow signature of
    the original model says ``double``)."""
    return {
        "name": info.name,
        "versions": [info.version],
        "platform": _platform(info),
        "inputs": [
            {"name": c.name, "datatype": _V2_OF_TYPE.get(c.type, "BYTES"), "shape": [-1, *(c.shape or (1,))]}
            for c in info.signature.inputs
        ],
        "outputs": _output_metadata(info),
    }


def model_config(info: DeploymentInfo, max_batch_size: int) -> dict[str, Any]:
    """Triton's model configuration as perf_analyzer reads it (dims exclude the batch dimension)."""
    meta = model_metadata(info)
    return {
        "name": info.name,
        "platform": meta["platform"],
        "backend": "onnxruntime" if info.runtime == "onnx" else "python",
        "max_batch_size": max_batch_size,
        "dynamic_batching": {},
        "input": [
            {"name": i["name"], "data_type": f"TYPE_{_triton(i['datatype'])}", "dims": i["shape"][1:]}
            for i in meta["inputs"]
        ],
        "output": [
            {"name": o["name"], "data_type": f"TYPE_{_triton(o['datatype'])}", "dims": o["shape"][1:]}
            for o in meta["outputs"]
        ],
    }


def _triton(datatype: str) -> str:
    return "STRING" if datatype == "BYTES" else datatype


def _platform(info: DeploymentInfo) -> str:
    return "onnxruntime_onnx" if info.runtime == "onnx" else f"mlflow_{info.flavor}"


def _output_metadata(info: DeploymentInfo) -> list[dict[str, Any]]:
    kind, dtypes = info.output_kind, info.output_dtypes
    spec = info.signature.outputs[0] if len(info.signature.outputs) == 1 else None
    declared = _V2_OF_TYPE.get(spec.type) if spec is not None else None

    def datatype(output: str, fallback: str) -> str:
        dtype = dtypes.get(output)
        return v2_datatype(np.dtype(dtype)) if dtype is not None else fallback

    if kind.kind != "classification":
        shape = [-1, *spec.shape] if spec is not None and spec.shape else [-1]
        return [{"name": "predictions", "datatype": datatype("predictions", declared or "FP32"), "shape": shape}]
    n = len(kind.classes or ())
    label_type = "BYTES" if any(isinstance(c, str) for c in kind.classes or ()) else "INT64"
    proba = kind.prediction_is_probabilities
    if dtypes:  # ONNX: the graph's outputs
        preds = datatype("predictions", "FP32" if proba else label_type)
        outputs = [{"name": "predictions", "datatype": preds, "shape": [-1, n] if proba else [-1]}]
        if "label" in dtypes:
            outputs.append({"name": "label", "datatype": datatype("label", label_type), "shape": [-1]})
        if "probabilities" in dtypes:
            outputs.append({"name": "probabilities", "datatype": datatype("probabilities", "FP32"), "shape": [-1, n]})
        return outputs
    if not proba:  # pyfunc returning labels: the label is the prediction
        return [{"name": n_, "datatype": label_type, "shape": [-1]} for n_ in ("predictions", "label")]
    probs = declared or "FP64"  # pyfunc returning probabilities (float64 from scikit-learn)
    return [
        {"name": "predictions", "datatype": probs, "shape": [-1, n]},
        {"name": "label", "datatype": label_type, "shape": [-1]},
        {"name": "probabilities", "datatype": probs, "shape": [-1, n]},
    ]


# -- routes -----------------------------------------------------------------------------------------------------------


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _describe(request: Request, name: str, version_or_alias: str | None) -> DeploymentInfo | Response:
    try:
        return _service(request).describe(name, version_or_alias)
    except ServingError as exc:
        return error_reply(exc, request.scope.get("state", {}).get("request_id")).response()


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    try:
        ours = version("modelport")
    except PackageNotFoundError:
        ours = "0+unknown"
    return _json({"name": "modelport", "version": ours, "extensions": _EXTENSIONS})


@router.get("/health/live", summary="Liveness")
async def live() -> Response:
    return _json({"live": True})


@router.get("/health/ready", summary="Readiness: some model is ready, or none failed")
async def ready(request: Request) -> Response:
    service = _service(request)
    ok = any(d.state == "READY" for d in service.list()) or not service.failures()
    return _json({"ready": ok}, 200 if ok else 503)


async def _metadata(request: Request, name: str, version: str | None) -> Response:
    info = _describe(request, name, version)
    return info if isinstance(info, Response) else _json(model_metadata(info))


async def _ready(request: Request, name: str, version: str | None) -> Response:
    info = _describe(request, name, version)
    if isinstance(info, Response):
        return info
    ok = info.state == "READY"
    return _json({"name": info.name, "ready": ok}, 200 if ok else 503)


async def _config(request: Request, name: str, version: str | None) -> Response:
    info = _describe(request, name, version)
    if isinstance(info, Response):
        return info
    rows = info.batching.max_batch_rows if info.batching is not None else 0
    return _json(model_config(info, max(1, rows)))


async def _infer(request: Request, name: str, version: str | None) -> Response:
    service = _service(request)
    state = request.scope.setdefault("state", {})
    state["model"], state["version"] = name, version
    try:
        body = await read_body(request, service.max_body_bytes)
        reply = await infer(service, name, version, body, request.headers.get(HEADER_LENGTH), state)
    except ServingError as exc:
        state["error"] = exc.message
        return error_reply(exc, state.get("request_id")).response()
    return reply.response()


@router.get("/models/{name}", summary="Model metadata")
async def metadata(name: str, request: Request) -> Response:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata (one version or alias)")
async def metadata_version(name: str, version: str, request: Request) -> Response:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(name: str, request: Request) -> Response:
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (one version or alias)")
async def model_ready_version(name: str, version: str, request: Request) -> Response:
    return await _ready(request, name, version)


@router.get("/models/{name}/config", summary="Model configuration (Triton extension, for perf_analyzer)")
async def config(name: str, request: Request) -> Response:
    return await _config(request, name, None)


@router.get("/models/{name}/versions/{version}/config", summary="Model configuration (one version or alias)")
async def config_version(name: str, version: str, request: Request) -> Response:
    return await _config(request, name, version)


@router.post("/models/{name}/infer", summary="Inference (JSON tensors or the binary tensor extension)")
async def model_infer(name: str, request: Request) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference (one version or alias)")
async def model_infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, name, version)
