"""A registry model loaded for batch scoring: the same deployment ``serve`` builds, fed Arrow columns.

``BatchModel.load`` runs the server's own ``ModelLoader`` (resolve → download → convert to ONNX with the same cache
→ parity check → warm-up), so the session, the column decoder (``Decoder.decode_columns``, the Arrow and v2
path of the endpoint), the feed builder and the output mapping are the objects the endpoint uses: a table scored
here and a request scored live give the same numbers. Only the batcher is bypassed: a batch job hands the
session whole chunks itself, as the batcher would hand it a full batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from registry import ColumnSpec, ModelSignature
from server.batch.errors import BatchError, SchemaMismatch
from server.deployments import Deployment
from server.errors import InvalidInput
from server.lifecycle.loader import ModelLoader, Progress, synthetic_row
from server.settings import DeploymentSpec, Settings, load_settings

DEFAULT_CHUNK_ROWS = 65_536
_ROW = re.compile(r"\brow (\d+)\b")


def model_uri(text: str) -> str:
    """``models:/name@alias`` or ``models:/name/3`` from that or from the short ``name@alias`` / ``name/3``."""
    text = text.strip()
    return text if text.startswith("models:/") else f"models:/{text}"


def arrow_types(col: ColumnSpec) -> tuple[str, ...]:
    """What Arrow type families a signature column accepts (checked before any row is read)."""
    if col.shape:
        return ("list",)
    return {
        "integer": ("integer", "floating"),
        "long": ("integer", "floating"),
        "float": ("integer", "floating"),
        "double": ("integer", "floating"),
        "boolean": ("boolean",),
        "string": ("string",),
        "binary": ("binary", "string"),
        "datetime": ("timestamp", "date", "string"),
    }.get(col.type, ("string",))


def family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return family(t.value_type)
    checks = (
        ("boolean", pa.types.is_boolean),
        ("integer", pa.types.is_integer),
        ("floating", pa.types.is_floating),
        ("string", lambda x: pa.types.is_string(x) or pa.types.is_large_string(x) or pa.types.is_string_view(x)),
        ("binary", lambda x: pa.types.is_binary(x) or pa.types.is_large_binary(x)),
        ("timestamp", pa.types.is_timestamp),
        ("date", pa.types.is_date),
        ("list", lambda x: pa.types.is_list(x) or pa.types.is_large_list(x) or pa.types.is_fixed_size_list(x)),
    )
    return next((name for name, check in checks if check(t)), str(t))


#: The Arrow type to read a CSV column as, per signature type (so ``"007"`` stays a string).
CSV_TYPES: dict[str, pa.DataType] = {
    "integer": pa.int64(), "long": pa.int64(), "float": pa.float64(), "double": pa.float64(),
    "boolean": pa.bool_(), "string": pa.string(), "binary": pa.binary(),
}  # fmt: skip


@dataclass(slots=True)
class Prepared:
    """One chunk decoded to ONNX feeds, ready for the session."""

    feeds: dict[str, np.ndarray]
    rows: int


class BatchModel:
    """A loaded model that scores Arrow columns chunk by chunk through its deployment's runtime session."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.signature: ModelSignature = deployment.signature
        self.output_type = self._probe()
        """The Arrow type of the prediction column (from a warm-up on the model's input example)."""

    @classmethod
    def load(
        cls,
        model: str,
        settings: Settings | None = None,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        progress: Progress | None = None,
    ) -> BatchModel:
        """Resolve, convert (or find in the conversion cache), parity-check and warm up ``model`` as ``serve`` does.

        Args:
            model: ``models:/name@alias``, ``models:/name/3``, or the short ``name@alias`` / ``name/3``.
            settings: registry, state dir (conversion cache), providers, threads; default: env and defaults.
            chunk_rows: the largest chunk this model will be given.
            progress: called with loading steps (``resolving``, ``converting`` ...).

        Raises:
            BatchError: unknown model/version/alias, unreachable registry, a model without signature.
        """
        settings = settings if settings is not None else load_settings()
        settings = settings.model_copy(update={"max_rows": max(chunk_rows, settings.max_rows)})
        uri = model_uri(model)
        from registry.client import RegistryClient

        try:
            registry = RegistryClient(settings.effective_registry_uri, settings.effective_tracking_uri)
            deployment = ModelLoader(registry, settings, progress=progress).build(DeploymentSpec(model=uri))
        except Exception as exc:  # registry, MLflow and converter failures: one line naming the model
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BatchError(f"cannot load {uri}: {text}") from None
        return cls(deployment)

    @property
    def uri(self) -> str:
        return self.deployment.ref.uri

    @property
    def runtime(self) -> str:
        return self.deployment.converted.runtime

    def check_schema(self, schema: pa.Schema, mapping: Mapping[str, str] | None = None) -> None:
        """Refuse, before any row is read, a table that lacks a required column or holds one of the wrong type.

        Args:
            schema: the input's Arrow schema.
            mapping: signature column → input column (``--columns``); others are read under their own name.

        Raises:
            SchemaMismatch: naming the column.
        """
        mapping = mapping or {}
        for col in self.signature.inputs:
            source = mapping.get(col.name, col.name)
            label = f"'{source}'" + (f" (model input '{col.name}')" if source != col.name else "")
            index = schema.get_field_index(source)
            if index < 0:
                if col.optional:
                    continue
                raise SchemaMismatch(
                    f"input has no column {label}, which the model requires ({col.type}); it has: "
                    f"{', '.join(schema.names[:30])}{' ...' if len(schema.names) > 30 else ''}",
                    column=source,
                )
            got = family(schema.field(index).type)
            if got not in arrow_types(col):
                want = f"{col.type}{list(col.shape) if col.shape else ''}"
                raise SchemaMismatch(
                    f"column {label} is {schema.field(index).type}, but the model takes {want}", column=source
                )

    def required(self, mapping: Mapping[str, str] | None = None) -> list[str]:
        """Input columns that must never be null (the signature's required columns, under their input names)."""
        mapping = mapping or {}
        return [mapping.get(c.name, c.name) for c in self.signature.inputs if not c.optional]

    def prepare(self, columns: Mapping[str, pa.Array | pa.ChunkedArray], offset: int = 0) -> Prepared:
        """Decode one chunk (signature column → Arrow array) to ONNX feeds, as the endpoint decodes Arrow bodies.

        Args:
            columns: the chunk's columns by signature name; absent optional columns are filled as missing.
            offset: the chunk's first row in the whole input, for messages.

        Raises:
            SchemaMismatch: a null in a required column or a value the column cannot take, naming column and row.
        """
        dep = self.deployment
        given: dict[str, pa.Array | pa.ChunkedArray] = {}
        n = 0
        for col in self.signature.inputs:
            column = columns.get(col.name)
            if column is None:
                continue
            n = len(column)
            if column.null_count and not col.optional:
                row = offset + int(pc.index(column.is_null(), True).as_py())
                raise SchemaMismatch(
                    f"column '{col.name}' row {row}: value is null but the model requires it ({col.type})",
                    column=col.name,
                )
            given[col.name] = column
        try:
            arrays = {name: to_numpy(name, column) for name, column in given.items()}
            decoded = dep.decoder.decode_columns(arrays, strict=False)
            dep.check_inputs(decoded.columns)  # as the endpoint checks them
        except InvalidInput as exc:
            message = _ROW.sub(lambda m: f"row {offset + int(m[1])}", exc.message, count=1)
            raise SchemaMismatch(message, column=exc.field) from None
        return Prepared(dep.to_feeds(decoded.columns, decoded.rows), n or decoded.rows)

    def run(self, prepared: Prepared) -> pa.Array:
        """Score one prepared chunk in the runtime session; the predictions as an Arrow array (one per row)."""
        dep = self.deployment
        predictions, _label, _proba = dep.from_outputs(dep.session.run(prepared.feeds))
        return to_arrow(predictions)

    def predict(self, columns: Mapping[str, pa.Array | pa.ChunkedArray], offset: int = 0) -> pa.Array:
        """``run(prepare(columns))``: the endpoint's ``predictions`` for these rows, as an Arrow array."""
        return self.run(self.prepare(columns, offset))

    def _probe(self) -> pa.DataType:
        dep = self.deployment
        example = dep.model.input_example or [synthetic_row(self.signature)]
        decoded = dep.decoder.decode_records(example)
        predictions, _label, _proba = dep.from_outputs(dep.session.run(dep.to_feeds(decoded.columns, decoded.rows)))
        return to_arrow(predictions).type


def to_numpy(name: str, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One Arrow column as the endpoint's Arrow decoder gives it to ``decode_columns``: zero-copy numbers, object
    arrays of ``str`` for strings, ``None`` for nulls, nested lists as arrays."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
    if column.null_count:
        out = np.empty(len(column), dtype=object)
        out[:] = column.to_pylist()
        return out
    if family(kind) == "list":
        try:
            return np.asarray(column.to_pylist())
        except ValueError:
            raise InvalidInput(f"column '{name}' holds ragged lists", field=name) from None
    try:
        return column.to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, NotImplementedError):
        out = np.empty(len(column), dtype=object)
        out[:] = column.to_pylist()
        return out


def to_arrow(predictions: np.ndarray) -> pa.Array:
    """Predictions (rows first) as an Arrow array: numbers or strings per row, or a list per row for 2-D outputs."""
    if predictions.ndim == 2 and predictions.dtype.kind in "biuf":
        values = pa.array(np.ascontiguousarray(predictions).ravel())
        width = predictions.shape[1]
        return pa.FixedSizeListArray.from_arrays(values, width).cast(pa.list_(values.type))
    if predictions.ndim == 1 and predictions.dtype.kind != "O":
        return pa.array(predictions)
    return pa.array([v.item() if hasattr(v, "item") else v for v in predictions.tolist()])
