"""Request bodies for the demo ``sales_forecast`` model (``year: long, product: string, units: double``), written once.

Every format carries the same rows: MLflow ``dataframe_split`` JSON (what ``mlflow models serve`` accepts), an Apache
Arrow IPC stream, and Open Inference Protocol v2 bodies (JSON tensors, and the binary tensor extension).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

PRODUCTS = ("product_A", "product_B", "product_C", "product_D", "product_E")
ARROW = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True, slots=True)
class Body:
    """A request body on disk and the headers it needs."""

    path: Path
    content_type: str = "application/json"
    header: str = ""


def sales_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` deterministic rows as typed columns."""
    rng = np.random.default_rng(seed)
    return {
        "year": rng.integers(2018, 2026, n, dtype=np.int64),
        "product": np.array([PRODUCTS[i] for i in rng.integers(0, len(PRODUCTS), n)], dtype=object),
        "units": np.round(rng.uniform(0.0, 500.0, n), 2),
    }


def dataframe_split(columns: dict[str, np.ndarray]) -> bytes:
    names = list(columns)
    data = [list(row) for row in zip(*(columns[c].tolist() for c in names), strict=True)]
    return orjson.dumps({"dataframe_split": {"columns": names, "data": data}})


def arrow_stream(columns: dict[str, np.ndarray]) -> bytes:
    import pyarrow as pa

    arrays = {name: pa.array(v.tolist() if v.dtype == object else v) for name, v in columns.items()}
    table = pa.table(arrays)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


_V2_TYPES = {"i": "INT64", "f": "FP64", "O": "BYTES"}


def v2_json(columns: dict[str, np.ndarray]) -> bytes:
    inputs = [
        {"name": name, "shape": [len(values), 1], "datatype": _V2_TYPES[values.dtype.kind], "data": values.tolist()}
        for name, values in columns.items()
    ]
    return orjson.dumps({"inputs": inputs})


def v2_binary(columns: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """The binary tensor extension: JSON header, then each tensor's little-endian bytes; returns (body, header size)."""
    inputs, blobs = [], []
    for name, values in columns.items():
        if values.dtype == object:
            raw = b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values))
        else:
            raw = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
        inputs.append({"name": name, "shape": [len(values), 1], "datatype": _V2_TYPES[values.dtype.kind],
                       "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        blobs.append(raw)
    header = orjson.dumps({"inputs": inputs, "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]})
    return header + b"".join(blobs), len(header)


def write_bodies(directory: Path, sizes: tuple[int, ...]) -> dict[tuple[str, int], Body]:
    """Write every format at every size; keys are ``(format, rows)`` with format ``json``/``arrow``/``v2``/``v2bin``."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[tuple[str, int], Body] = {}
    for n in sizes:
        cols = sales_columns(n)
        for fmt, data, content_type, header in (
            ("json", dataframe_split(cols), "application/json", ""),
            ("arrow", arrow_stream(cols), ARROW, ""),
            ("v2", v2_json(cols), "application/json", ""),
        ):
            path = directory / f"sales_{fmt}_{n}.bin"
            path.write_bytes(data)
            out[(fmt, n)] = Body(path, content_type, header)
        body, size = v2_binary(cols)
        path = directory / f"sales_v2bin_{n}.bin"
        path.write_bytes(body)
        out[("v2bin", n)] = Body(path, "application/octet-stream", f"Inference-Header-Content-Length: {size}")
    return out
