"""Binary and tensor wire formats, decoded to (and encoded from) plain numpy columns. No transport imports.

* Apache Arrow IPC stream (``application/vnd.apache.arrow.stream``): one record batch stream whose fields are the
  signature's columns.
* Open Inference Protocol v2 (KServe / Triton / MLServer) ``infer`` requests and responses, with JSON tensors and
  Triton's binary tensor extension: the JSON header is followed by the raw little-endian tensors, its length given in
  the ``Inference-Header-Content-Length`` header; ``BYTES`` elements carry a 4-byte little-endian length prefix.

Errors are ``InvalidInput`` naming the offending input.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from server.columns import field_name, short
from server.errors import InvalidInput

ARROW_STREAM = "application/vnd.apache.arrow.stream"

#: v2 datatype → numpy dtype (``BYTES`` → object arrays of ``str``/``bytes``).
V2_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND_SIZE = {(dt.kind, dt.itemsize): name for name, dt in V2_DTYPES.items() if name != "BYTES"}


def v2_datatype(dtype: np.dtype[Any]) -> str:
    """The v2 datatype of a numpy dtype (strings, bytes and objects are ``BYTES``)."""
    if dtype.kind in "OSU":
        return "BYTES"
    name = _BY_KIND_SIZE.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise InvalidInput(f"dtype {dtype} has no v2 datatype")
    return name


# -- Arrow IPC --------------------------------------------------------------------------------------------------------


def read_arrow_stream(body: bytes) -> dict[str, np.ndarray]:
    """Columns of an Arrow IPC stream (all record batches), one numpy array each.

    Numeric columns without nulls come out without a per-value Python step; string columns become object arrays;
    columns with nulls become object arrays with ``None`` so the signature decides whether nulls are allowed.
    """
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"request body is not an Arrow IPC stream: {short(exc, 200)}", field="body") from None
    columns: dict[str, np.ndarray] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in columns:
            raise InvalidInput(f"Arrow stream has column '{short(name)}' twice", field=field_name(name))
        try:
            columns[name] = _arrow_column(name, column)
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(
                f"Arrow column '{short(name)}' cannot be read: {short(exc, 200)}", field=field_name(name)
            ) from None
    return columns


def _arrow_column(name: str, column: Any) -> np.ndarray:
    import pyarrow as pa

    kind = column.type
    if column.null_count:
        out = np.empty(len(column), dtype=object)
        out[:] = column.to_pylist()
        return out
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        try:
            return np.asarray(column.to_pylist())
        except ValueError:
            raise InvalidInput(f"Arrow column '{short(name)}' holds ragged lists", field=field_name(name)) from None
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
    try:
        return column.to_numpy()
    except (pa.ArrowInvalid, NotImplementedError):
        out = np.empty(len(column), dtype=object)
        out[:] = column.to_pylist()
        return out


# -- Open Inference Protocol v2 ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class InferRequest:
    """A decoded v2 ``infer`` request.

    Attributes:
        id: The request ``id`` (echoed in the response), ``None`` when absent.
        inputs: Input name → array in the shape the request declared.
        outputs: Requested output names → whether each wants binary data; empty means "every output".
        binary_output: Request-level ``binary_data_output`` (default for outputs not named in ``outputs``).
        parameters: Request ``parameters``.
    """

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, bool] = field(default_factory=dict)
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def decode_infer(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode a v2 ``infer`` body (JSON, or JSON header + binary tensors when ``header_length`` is given)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} is outside the {len(body)}-byte body",
                field="Inference-Header-Content-Length",
            )
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        payload = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"infer request is not valid JSON: {short(exc, 200)}", field="body") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise InvalidInput("infer request must be an object with a non-empty 'inputs' list", field="inputs")
    params = _parameters(payload, "parameters")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(payload["inputs"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidInput(f"inputs[{i}] must be an object with a 'name'", field=f"inputs[{i}]")
        name = spec["name"]
        if name in inputs:
            raise InvalidInput(f"input '{short(name)}' is given twice", field=field_name(name))
        shape, dtype = _shape(spec, name), _datatype(spec, name)
        size = _parameters(spec, f"inputs[{i}].parameters").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input '{short(name)}': binary_data_size {short(repr(size), 40)} overruns the body",
                    field=field_name(name),
                )
            inputs[name] = _from_binary(name, binary[offset : offset + size], shape, dtype)
            offset += size
        elif "data" in spec:
            inputs[name] = _from_json(name, spec["data"], shape, dtype)
        else:
            raise InvalidInput(f"input '{short(name)}' has neither 'data' nor binary_data_size", field=field_name(name))
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} binary bytes are not claimed by any input", field="body")
    outputs: dict[str, bool] = {}
    binary_output = bool(params.get("binary_data_output", False))
    wanted = payload.get("outputs")
    if wanted is not None and not isinstance(wanted, list):
        raise InvalidInput("infer request 'outputs' must be a list of objects with a 'name'", field="outputs")
    for i, spec in enumerate(wanted or ()):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidInput(f"outputs[{i}] must be an object with a 'name'", field=f"outputs[{i}]")
        wants = _parameters(spec, f"outputs[{i}].parameters").get("binary_data", binary_output)
        outputs[spec["name"]] = bool(wants)
    ident = payload.get("id")
    if ident is not None and not isinstance(ident, str | int | float):
        raise InvalidInput("infer request 'id' must be a string", field="id")
    return InferRequest(None if ident is None else str(ident), inputs, outputs, binary_output, dict(params))


def _parameters(spec: dict[str, Any], where: str) -> dict[str, Any]:
    params = spec.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where} must be an object", field=where)
    return params


def _shape(spec: dict[str, Any], name: str) -> tuple[int, ...]:
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or len(shape) > 32
        or not all(type(d) is int and 0 <= d < 2**62 for d in shape)
    ):
        raise InvalidInput(
            f"input '{short(name)}': shape must be a non-empty list of sizes, got {short(repr(shape), 80)}",
            field=field_name(name),
        )
    return tuple(shape)


def _datatype(spec: dict[str, Any], name: str) -> np.dtype[Any]:
    datatype = spec.get("datatype")
    dtype = V2_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(
            f"input '{short(name)}': unknown datatype {short(repr(datatype), 40)}; use one of {list(V2_DTYPES)}",
            field=field_name(name),
        )
    return dtype


def _from_binary(name: str, raw: memoryview, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    count = math.prod(shape)  # exact: np.prod would wrap around for huge shapes
    if dtype.kind != "O":
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"input '{short(name)}': {len(raw)} bytes do not hold shape {list(shape)} of {dtype.name}",
                field=field_name(name),
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    items: list[str | bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInput(f"input '{short(name)}': truncated BYTES length prefix", field=field_name(name))
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise InvalidInput(f"input '{short(name)}': BYTES element overruns its tensor", field=field_name(name))
        item = bytes(raw[pos : pos + n])
        pos += n
        try:
            items.append(item.decode("utf-8"))
        except UnicodeDecodeError:
            items.append(item)
    if len(items) != count:
        raise InvalidInput(
            f"input '{short(name)}': {len(items)} BYTES elements for shape {list(shape)}", field=field_name(name)
        )
    out = np.empty(count, dtype=object)
    out[:] = items
    return out.reshape(shape)


def _from_json(name: str, data: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    try:
        if dtype.kind == "O":
            flat = np.asarray(data, dtype=object).ravel()
            if not all(isinstance(v, str) for v in flat):
                raise ValueError("BYTES data must be strings")
            arr = flat
        else:
            arr = np.asarray(data)
            if arr.dtype.kind not in "biuf" or (dtype.kind in "iu" and arr.dtype.kind == "f"):
                raise ValueError(f"{dtype.name} data must be numbers")
            if (dtype.kind == "b") != (arr.dtype.kind == "b"):
                raise ValueError("BOOL data must be true/false, and only BOOL data may be")
            arr = _fit_datatype(arr, dtype)
        return arr.reshape(shape)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidInput(
            f"input '{short(name)}': {short(exc, 200)} (shape {list(shape)})", field=field_name(name)
        ) from None


def _fit_datatype(arr: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Cast JSON numbers to the declared v2 datatype, refusing values it cannot hold (never wrap or overflow)."""
    if arr.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise ValueError(f"a value is out of range for {dtype.name} [{info.min}, {info.max}]")
    elif arr.size and dtype.kind == "f" and arr.dtype.itemsize > dtype.itemsize:
        limit = float(np.finfo(dtype).max)
        with np.errstate(invalid="ignore"):
            if (np.isfinite(arr) & (np.abs(arr) > limit)).any():
                raise ValueError(f"a value is out of range for {dtype.name} (at most {limit:g})")
    return arr.astype(dtype, copy=False)


def encode_infer(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, np.ndarray],
    binary: set[str],
) -> tuple[bytes, int | None]:
    """A v2 ``infer`` response; outputs named in ``binary`` travel as raw bytes after the JSON header.

    Returns:
        The body and, when any output is binary, the JSON header's length (the ``Inference-Header-Content-Length``).
    """
    specs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in outputs.items():
        datatype = v2_datatype(arr.dtype)
        spec: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary:
            raw = _to_binary(arr, datatype)
            spec["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            spec["data"] = np.ascontiguousarray(arr).ravel() if datatype != "BYTES" else [_text(v) for v in arr.ravel()]
        specs.append(spec)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": specs}
    if request_id is not None:
        response["id"] = request_id
    head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _to_binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(arr, dtype=V2_DTYPES[datatype]).tobytes()
    parts = []
    for value in arr.ravel():
        raw = value if isinstance(value, bytes) else _text(value).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def _text(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)
