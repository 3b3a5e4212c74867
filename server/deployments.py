"""Served model deployments and the table the service looks them up in."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry import ColumnSpec, ConvertedModel, ModelRef, ModelSignature, ModelVersionInfo, Parity
from server.columns import check_categories, check_feed, short, show_names
from server.decode import Decoder
from server.errors import ModelNotFound
from server.runtime.batcher import Batcher, BatcherStats
from server.runtime.session import Session
from server.schema import ModelSchema, OutputKind

log = logging.getLogger(__name__)

ToFeeds = Callable[[Mapping[str, np.ndarray], int], dict[str, np.ndarray]]
FromOutputs = Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]


@dataclass(slots=True)
class Lifecycle:
    """Where a deployment stands in its lifecycle (set by the manager and the alias follower)."""

    pinned: bool = True
    """Pinned deployments are never evicted nor unloaded when idle (listed ones, endpoints without scale-to-zero)."""
    owners: tuple[str, ...] = ()
    """Who holds it: ``settings``, ``endpoint:<name>``; empty for one loaded on demand."""
    pending_version: str | None = None
    """A newer version of the alias being loaded in the background."""
    last_error: str | None = None
    """Why the last promotion failed (the deployment kept serving)."""
    previous_version: str | None = None
    """The version this deployment replaced in its last hot swap."""
    swapped_at: float | None = None
    """Wall-clock time of the last hot swap."""

    def summary(self) -> dict[str, Any]:
        return {
            "pinned": self.pinned,
            "owners": list(self.owners),
            "pending_version": self.pending_version,
            "last_error": self.last_error,
            "previous_version": self.previous_version,
            "swapped_at": self.swapped_at,
        }


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    """A read-only view of one deployment, for listings, model cards and tool generation."""

    key: str
    """Stable id of the deployment: ``name@alias`` or ``name/version`` as it was deployed."""
    ref: str
    """The deployed model URI (``models:/name@champion``)."""
    name: str
    version: str
    aliases: tuple[str, ...]
    state: str
    runtime: str
    provider: str
    reason: str | None
    flavor: str
    signature: ModelSignature
    schema: ModelSchema
    output_kind: OutputKind
    model: ModelVersionInfo
    parity: Parity | None
    load_seconds: float
    loaded_at: float
    batching: BatcherStats | None
    lifecycle: Lifecycle | None = None
    memory_bytes: int = 0
    """Approximate memory held by the session (for the cache bound)."""
    idle_seconds: float | None = None
    """Seconds since the last request (``None``: none yet)."""
    output_dtypes: Mapping[str, str] = field(default_factory=dict)
    """numpy dtype names of the outputs a prediction carries (``predictions``, and for classifiers ``label``,
    ``probabilities``) as the runtime produces them (ONNX graph output types); empty when only a run would tell
    (the pyfunc runtime: its signature says)."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready listing entry."""
        return {
            "key": self.key,
            "name": self.name,
            "version": self.version,
            "aliases": list(self.aliases),
            "model_uri": self.ref,
            "state": self.state,
            "runtime": self.runtime,
            "provider": self.provider,
            "reason": self.reason,
            "flavor": self.flavor,
            "parity": None if self.parity is None else _parity(self.parity),
            "load_seconds": round(self.load_seconds, 3),
            "memory_mb": round(self.memory_bytes / 2**20, 3),
            "idle_seconds": None if self.idle_seconds is None else round(self.idle_seconds, 3),
            "pending_version": None if self.lifecycle is None else self.lifecycle.pending_version,
            "last_error": None if self.lifecycle is None else self.lifecycle.last_error,
            "lifecycle": None if self.lifecycle is None else self.lifecycle.summary(),
            "description": self.model.model_description,
            "version_description": self.model.version_description,
            "signature": {
                "inputs": [_col(c) for c in self.signature.inputs],
                "params": [
                    {"name": p.name, "type": p.type, "default": _jsonable(p.default)} for p in self.signature.params
                ],
                "output": {
                    "kind": self.output_kind.kind,
                    "description": self.signature.output_description,
                    "unit": self.signature.output_unit,
                    "classes": None
                    if self.output_kind.classes is None
                    else [_jsonable(c) for c in self.output_kind.classes],
                },
            },
            "batching": None
            if self.batching is None
            else {
                "batches": self.batching.batches,
                "requests": self.batching.requests,
                "rows": self.batching.rows,
                "max_batch_rows_seen": self.batching.max_rows_seen,
                "queue_depth": self.batching.queue_depth,
            },
        }


def _parity(p: Parity) -> dict[str, Any]:
    """The parity check as it was applied: floats pass when ``|onnx - pyfunc| <= atol + rtol * |pyfunc|``."""
    return {
        "rows": p.rows,
        "max_abs_err": p.max_abs_err,
        "atol": p.tolerance,
        "rtol": p.rtol,
        "rule": "|onnx - pyfunc| <= atol + rtol * |pyfunc|",
        "passed": p.passed,
    }


def _jsonable(v: Any) -> Any:
    return v.tolist() if hasattr(v, "tolist") else v


def _col(c: Any) -> dict[str, Any]:
    out = {"name": c.name, "type": c.type, "optional": c.optional}
    for k in ("description", "unit"):
        if getattr(c, k):
            out[k] = getattr(c, k)
    if c.shape:
        out["shape"] = list(c.shape)
    if c.categories:
        out["categories"] = [_jsonable(x) for x in c.categories]
    return out


@dataclass(eq=False)
class Deployment:
    """One model version being served: its session, batcher, decoder and schemas."""

    ref: ModelRef
    model: ModelVersionInfo
    converted: ConvertedModel
    signature: ModelSignature
    schema: ModelSchema
    output_kind: OutputKind
    decoder: Decoder
    session: Session
    batcher: Batcher
    to_feeds: ToFeeds
    from_outputs: FromOutputs
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    state: str = "READY"
    run_with_params: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], Mapping[str, np.ndarray]] | None = None
    """Unbatched path for requests carrying params (pyfunc models whose signature has params)."""
    last_used: float | None = None
    """``time.monotonic()`` of the last request (the cache's LRU order and idle unloading)."""
    memory_bytes: int = 0
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    output_dtypes: dict[str, str] = field(init=False, default_factory=dict)
    """See ``DeploymentInfo.output_dtypes``; read from the ONNX graph when the deployment is built (off the loop)."""
    feed_dtypes: dict[str, np.dtype[Any]] = field(init=False, default_factory=dict)
    """Column → the dtype the runtime casts it to (ONNX inputs; e.g. float32 for a ``double`` column)."""
    closed_columns: tuple[ColumnSpec, ...] = field(init=False, default=())
    """Columns that take only their known categories (the encoder fails on others): checked on every request."""

    def __post_init__(self) -> None:
        self.output_dtypes = onnx_output_dtypes(self.converted)
        self.feed_dtypes = onnx_feed_dtypes(self.converted, self.signature)
        self.closed_columns = tuple(c for c in self.signature.inputs if c.closed and c.categories and not c.shape)

    def check_inputs(self, columns: Mapping[str, np.ndarray]) -> None:
        """Refuse decoded values this deployment's runtime cannot take (every door and batch scoring call it):
        values its ONNX inputs cannot hold, and categories a closed encoder would fail on."""
        for name, dtype in self.feed_dtypes.items():
            check_feed(name, columns[name], dtype)
        for col in self.closed_columns:
            check_categories(col, columns[col.name])

    def touch(self) -> None:
        """Record a request (LRU order, idle time)."""
        self.last_used = time.monotonic()

    @property
    def key(self) -> str:
        return f"{self.ref.name}@{self.ref.alias}" if self.ref.alias else f"{self.ref.name}/{self.ref.version}"

    def matches(self, version_or_alias: str | None) -> bool:
        if version_or_alias is None:
            return True
        v = version_or_alias.lstrip("@")
        # NOTE: only the alias this deployment follows (kept current by promotion) answers; other registry aliases
        # the version had when it loaded may have moved since, so they never match (no stale version by alias).
        return v == self.model.version or v == self.ref.alias

    def info(self) -> DeploymentInfo:
        aliases = tuple(dict.fromkeys((*((self.ref.alias,) if self.ref.alias else ()), *self.model.aliases)))
        return DeploymentInfo(
            key=self.key,
            ref=self.ref.uri,
            name=self.model.name,
            version=self.model.version,
            aliases=aliases,
            state=self.state,
            runtime=self.converted.runtime,
            provider=self.session.provider,
            reason=self.converted.reason,
            flavor=self.converted.flavor,
            signature=self.signature,
            schema=self.schema,
            output_kind=self.output_kind,
            model=self.model,
            parity=self.converted.parity,
            load_seconds=self.load_seconds,
            loaded_at=self.loaded_at,
            batching=self.batcher.stats,
            lifecycle=self.lifecycle,
            memory_bytes=self.memory_bytes,
            idle_seconds=None if self.last_used is None else time.monotonic() - self.last_used,
            output_dtypes=self.output_dtypes,
        )


def onnx_output_dtypes(converted: ConvertedModel) -> dict[str, str]:
    """``{"predictions"|"label"|"probabilities": numpy dtype name}`` from the ONNX graph's output types.

    Empty for the pyfunc runtime, and for outputs that are not tensors (e.g. a ZipMap's maps) or a graph that
    cannot be read.
    """
    if converted.runtime != "onnx" or converted.onnx_path is None:
        return {}
    try:
        import onnx
        from onnx import helper

        graph = onnx.load_model(str(converted.onnx_path), load_external_data=False).graph
        types = {
            o.name: np.dtype(helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)).name
            for o in graph.output
            if o.type.HasField("tensor_type")
        }
        first = graph.output[0].name if graph.output else None
    except Exception as exc:  # metadata falls back to the signature's types
        log.warning("cannot read ONNX output types", extra={"path": str(converted.onnx_path), "error": str(exc)})
        return {}
    names = {
        "predictions": converted.prediction_output or first,
        "label": converted.label_output,
        "probabilities": converted.probabilities_output,
    }
    return {key: types[name] for key, name in names.items() if name is not None and name in types}


def onnx_feed_dtypes(converted: ConvertedModel, signature: ModelSignature) -> dict[str, np.dtype[Any]]:
    """Column → numpy dtype of the ONNX input it is cast into (the loader's ``onnx_feeds``); empty for pyfunc."""
    if converted.runtime != "onnx":
        return {}
    dtypes = converted.input_dtypes
    if converted.input_layout == "matrix":
        matrix = np.dtype(dtypes.get(converted.matrix_input or "", "float32"))
        return {name: matrix for name in signature.input_names}
    out: dict[str, np.dtype[Any]] = {}
    for col in signature.inputs:
        name = converted.input_map.get(col.name, col.name)
        if name in dtypes:
            out[col.name] = np.dtype(dtypes[name])
    return out


class DeploymentTable:
    """Name → deployments. Thread-safe; notifies listeners when the set of deployments changes."""

    def __init__(self) -> None:
        self._by_key: dict[str, Deployment] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def add(self, deployment: Deployment) -> Deployment | None:
        """Add or replace (same key) a deployment; returns the one it replaced."""
        with self._lock:
            old = self._by_key.get(deployment.key)
            self._by_key[deployment.key] = deployment
            self._failed.pop(deployment.key, None)
        self._changed()
        return old

    def remove(self, key: str) -> Deployment | None:
        with self._lock:
            old = self._by_key.pop(key, None)
        if old is not None:
            self._changed()
        return old

    def mark_failed(self, key: str, reason: str) -> None:
        """Record that a deployment could not be loaded (shown in listings and /health)."""
        with self._lock:
            self._failed[key] = reason

    def failures(self) -> dict[str, str]:
        with self._lock:
            return dict(self._failed)

    def all(self) -> list[Deployment]:
        with self._lock:
            return list(self._by_key.values())

    def get(self, key: str) -> Deployment | None:
        """The deployment with exactly this key (``name@alias`` or ``name/version``), if served."""
        with self._lock:
            return self._by_key.get(key)

    def clear_failed(self, key: str) -> None:
        """Forget a recorded load failure."""
        with self._lock:
            self._failed.pop(key, None)

    def find(self, name: str, version_or_alias: str | None = None) -> Deployment:
        """The deployment serving ``name`` at that version or alias; exact deployed aliases win."""
        with self._lock:
            candidates = [d for d in self._by_key.values() if d.model.name == name]
        if not candidates:
            served = sorted({d.model.name for d in self.all()})
            raise ModelNotFound(
                f"model '{short(name)}' is not served; served models: {show_names(served)}", field="name"
            )
        if version_or_alias is None:
            if len(candidates) > 1:
                keys = sorted(d.key for d in candidates)
                raise ModelNotFound(
                    f"model '{short(name)}' has several deployments {show_names(keys)}; name a version or alias",
                    field="version",
                )
            return candidates[0]
        key = version_or_alias.lstrip("@")
        for d in candidates:
            if d.ref.alias == key or d.ref.version == key:
                return d
        for d in candidates:
            if d.matches(key):
                return d
        offered = sorted({d.model.version for d in candidates} | {a for d in candidates for a in d.info().aliases})
        raise ModelNotFound(
            f"model '{short(name)}' has no served version or alias '{short(version_or_alias)}'; served: "
            f"{show_names(offered)}",
            field="version",
        )

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # a listener must never break a deploy
                log.exception("deployment listener failed")
