"""Builds a ready Deployment from a model URI: resolve → download → convert → session → warm-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from registry import ConvertedModel, ModelRef, ModelSignature, ModelVersionInfo
from registry.client import RegistryClient
from registry.convert import convert
from registry.pyfunc import load_pyfunc
from server.decode import Decoder
from server.deployments import Deployment, FromOutputs, ToFeeds
from server.runtime.batcher import Batcher, BatcherConfig
from server.runtime.session import OnnxSession, PyfuncSession, Session
from server.schema import OutputKind, build_schema
from server.settings import DeploymentSpec, Settings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class ModelLoader:
    """Turns deployment specs into ready deployments. Blocking: call from a worker thread."""

    def __init__(self, registry: RegistryClient, settings: Settings, *, progress: Progress | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.progress = progress or (lambda _msg: None)

    def build(self, spec: DeploymentSpec) -> Deployment:
        """Load one deployment. The returned deployment's batcher still needs ``await batcher.start()``."""
        started = time.perf_counter()
        ref = ModelRef.parse(spec.model)
        self.progress(f"{ref}: resolving")
        info = self.registry.resolve(ref)
        self.progress(f"{ref}: downloading version {info.version}")
        model_dir = self.registry.download(info, self.settings.cache_dir)
        converted = convert(info, model_dir, self.settings.cache_dir, progress=lambda m: self.progress(f"{ref}: {m}"))
        signature = _signature(info, converted)
        session, to_feeds, from_outputs = self._runtime(converted, signature)
        decoder = Decoder(signature, max_rows=self.settings.max_rows)
        example = info.input_example or [synthetic_row(signature)]
        self.progress(f"{ref}: warming up")
        warm = decoder.decode_records(example)
        preds, _label, _proba = from_outputs(session.run(to_feeds(warm.columns, warm.rows)))
        kind = _output_kind(converted, preds)
        schema = build_schema(signature, example=info.input_example)
        batching = self.settings.batching_for(spec)
        batcher = Batcher(session.run, BatcherConfig(**batching.model_dump()), name=ref.uri)
        dep = Deployment(
            ref,
            info,
            converted,
            signature,
            schema,
            kind,
            decoder,
            session,
            batcher,
            to_feeds,
            from_outputs,
            load_seconds=time.perf_counter() - started,
        )
        log.info(
            "model loaded",
            extra={
                "model": ref.uri,
                "version": info.version,
                "runtime": converted.runtime,
                "provider": session.provider,
                "reason": converted.reason,
                "from_cache": converted.from_cache,
                "load_s": round(dep.load_seconds, 3),
            },
        )
        if converted.runtime == "pyfunc":
            log.warning("model served by the pyfunc runtime", extra={"model": ref.uri, "reason": converted.reason})
        return dep

    def _runtime(self, converted: ConvertedModel, signature: ModelSignature) -> tuple[Session, ToFeeds, FromOutputs]:
        if converted.runtime == "onnx" and converted.onnx_path is not None:
            session: Session = OnnxSession(
                converted.onnx_path, providers=self.settings.providers, intra_op_threads=self.settings.intra_op_threads
            )
            return session, onnx_feeds(converted, signature), onnx_outputs(converted)
        predict = load_pyfunc(converted, signature)

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"predictions": np.asarray(predict(feeds))}

        session = PyfuncSession(run, input_names=signature.input_names, output_names=["predictions"])
        return session, lambda columns, _n: dict(columns), pyfunc_outputs(converted)


def _signature(info: ModelVersionInfo, converted: ConvertedModel) -> ModelSignature:
    if info.signature is None:
        raise ValueError(f"{info.name}/{info.version} has no signature; log it with one (infer_signature)")
    if not converted.categories:
        return info.signature
    return info.signature.with_categories(converted.categories, converted.closed_categories)


def onnx_feeds(converted: ConvertedModel, signature: ModelSignature) -> ToFeeds:
    """Column arrays → ONNX feeds for the converted model's input layout."""
    dtypes = {name: np.dtype(d) for name, d in converted.input_dtypes.items()}
    if converted.input_layout == "matrix":
        name = converted.matrix_input or ""
        dtype = dtypes.get(name, np.dtype(np.float32))
        order = signature.input_names

        def to_matrix(columns: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
            out = np.empty((n, len(order)), dtype=dtype)
            for j, col in enumerate(order):
                out[:, j] = columns[col]
            return {name: out}

        return to_matrix
    plan = [
        (c.name, inp, c.shape, dtypes.get(inp))
        for c in signature.inputs
        for inp in (converted.input_map.get(c.name, c.name),)
    ]

    def to_columns(columns: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        feeds = {}
        for col, inp, shape, dtype in plan:
            arr = columns[col]
            if dtype is not None and arr.dtype != dtype:
                arr = arr.astype(dtype)
            feeds[inp] = arr.reshape((n, *shape) if shape else (n, 1))
        return feeds

    return to_columns


def onnx_outputs(converted: ConvertedModel) -> FromOutputs:
    pred_name, label_name, proba_name = (
        converted.prediction_output,
        converted.label_output,
        converted.probabilities_output,
    )
    squeeze = converted.squeeze_prediction

    def outputs(out: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        preds = out[pred_name] if pred_name else next(iter(out.values()))
        if squeeze and preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        label = out.get(label_name) if label_name else None
        if label is not None and label.ndim == 2 and label.shape[1] == 1:
            label = label[:, 0]
        return preds, label, out.get(proba_name) if proba_name else None

    return outputs


def pyfunc_outputs(converted: ConvertedModel) -> FromOutputs:
    classes = converted.classes

    def outputs(out: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        preds = out["predictions"]
        if classes is not None and preds.ndim == 2 and preds.shape[1] == len(classes):
            return preds, np.asarray(classes)[np.argmax(preds, axis=1)], preds
        if classes is not None and preds.ndim == 1:
            return preds, preds, None
        return preds, None, None

    return outputs


def _output_kind(converted: ConvertedModel, preds: np.ndarray) -> OutputKind:
    if converted.classes is not None:
        as_proba = (
            converted.prediction_output is not None and converted.prediction_output == converted.probabilities_output
        )
        if converted.runtime == "pyfunc":
            as_proba = preds.ndim == 2
        return OutputKind("classification", tuple(converted.classes), as_proba)
    if preds.ndim == 1 and preds.dtype.kind in "fiu":
        return OutputKind("regression")
    return OutputKind("tensor")


def synthetic_row(signature: ModelSignature) -> dict[str, Any]:
    """One valid row for a signature (first category, zero, empty string...): a warm-up when no example is logged."""
    row: dict[str, Any] = {}
    for c in signature.inputs:
        if c.categories:
            value: Any = c.categories[0].item() if hasattr(c.categories[0], "item") else c.categories[0]
        elif c.type in ("string", "binary"):
            value = ""
        elif c.type == "boolean":
            value = False
        elif c.type == "datetime":
            value = "2020-01-01T00:00:00"
        else:
            value = 0
        for dim in reversed(c.shape):
            value = [value] * max(dim, 1)
        row[c.name] = value
    return row
