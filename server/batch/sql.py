"""SQL over tables with registry models: DuckDB with an ``ai_query`` function, as Databricks SQL has.

```sql
SELECT *, ai_query('customer_ltv@champion',
                   struct_pack(age := age, income := income, tenure_months := tenure_months,
                               orders_per_year := orders_per_year, avg_order_value := avg_order_value)) AS ltv
FROM 'customers.parquet'
```

``ai_query`` is a vectorised (Arrow) DuckDB function: each call gets a whole DuckDB vector (2,048 rows) and scores
it in one runtime call through the same ``BatchModel`` as ``modelport score``. DuckDB functions have one fixed
type, so before each statement runs, the models it names (string literals) are loaded and ``ai_query`` is
registered with their input struct (the signature's columns, any order; numbers cast by DuckDB where lossless) and
their prediction type (``FLOAT``/``DOUBLE``, ``VARCHAR``, or ``DOUBLE[]`` for class probabilities). One statement
may call several models when they share one input signature and output type.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from server.batch.errors import BatchError
from server.batch.model import BatchModel, model_uri
from server.settings import Settings

_LITERAL = re.compile(r"\bai_query\s*\(\s*'((?:[^']|'')*)'", re.IGNORECASE)
_STRUCT = re.compile(r"ai_query\(\s*[A-Z_]+,\s*STRUCT\((?P<fields>.*)\)\)'", re.IGNORECASE | re.DOTALL)
_ROW = re.compile(r" row \d+")
_INTEGER = re.compile(r"^U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)$")
_FLOAT = re.compile(r"^(FLOAT|DOUBLE|DECIMAL(\(\d+,\s*\d+\))?)$")
_SQL_TYPES = {
    "integer": "BIGINT", "long": "BIGINT", "float": "DOUBLE", "double": "DOUBLE", "boolean": "BOOLEAN",
    "string": "VARCHAR", "binary": "BLOB", "datetime": "TIMESTAMP",
}  # fmt: skip


class SqlSession:
    """A DuckDB connection with ``ai_query(model, struct)`` scoring through registry models.

    Args:
        settings: registry, state dir (conversion cache), providers; default: env and defaults.
        connection: a DuckDB connection to extend; default: a new in-memory database.
    """

    def __init__(self, settings: Settings | None = None, connection: Any = None) -> None:
        try:
            import duckdb
        except ImportError:
            raise BatchError("DuckDB is not installed: pip install 'modelport[sql]'") from None

        self.settings = settings
        self.connection = connection if connection is not None else duckdb.connect()
        self.models: dict[str, BatchModel] = {}
        self._lock = threading.Lock()
        self._registered: tuple[str, str] | None = None
        self._failure: BaseException | None = None

    def model(self, name: str) -> BatchModel:
        """The loaded model for ``name@alias`` / ``name/3`` / a ``models:/`` URI (loaded once per session)."""
        uri = model_uri(name)
        with self._lock:
            if uri not in self.models:
                self.models[uri] = BatchModel.load(uri, self.settings, chunk_rows=4096)
            return self.models[uri]

    def execute(self, sql: str) -> Iterator[pa.Table | None]:
        """Run each statement of ``sql``; yield a table per query (``None`` for statements without rows)."""
        import duckdb

        try:
            statements = self.connection.extract_statements(sql)
        except duckdb.Error as exc:
            raise BatchError(_first_line(exc)) from None
        for statement in statements:
            text = statement.query
            self._prepare(text)
            self._failure = None
            try:
                if statement.type == duckdb.StatementType.SELECT:
                    yield self.connection.sql(text).to_arrow_table()
                else:
                    self.connection.execute(text)
                    yield None
            except duckdb.Error as exc:
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure from None
                raise BatchError(self._explain(exc)) from None

    def _prepare(self, text: str) -> None:
        """Load the models the statement names and register ``ai_query`` with their input and output types."""
        names = [m.replace("''", "'") for m in _LITERAL.findall(text)]
        if not names:
            return
        models = [self.model(n) for n in dict.fromkeys(names)]
        types = {(struct_type(m), sql_type(m.output_type)) for m in models}
        if len(types) > 1:
            raise BatchError(
                "ai_query: one statement may only call models with the same inputs and output type; "
                f"{', '.join(m.uri for m in models)} differ (score them in separate statements)"
            )
        ((params, returns),) = types
        if self._registered == (params, returns):
            return
        if self._registered is not None:
            self.connection.remove_function("ai_query")
        self.connection.create_function(
            "ai_query",
            self._udf,
            ["VARCHAR", params],
            returns,
            type="arrow",  # type: ignore[call-overload]
        )
        self._registered = (params, returns)

    def _udf(self, model: pa.ChunkedArray, rows: pa.ChunkedArray) -> pa.Array:
        try:
            return self._score(model, rows)
        except BaseException as exc:
            self._failure = exc
            raise

    def _score(self, model: pa.ChunkedArray, rows: pa.ChunkedArray) -> pa.Array:
        struct = rows.combine_chunks()
        names = model.combine_chunks()
        if names.null_count:
            raise BatchError("ai_query: the model name is null")
        uniques = pc.unique(names).to_pylist()
        if len(uniques) == 1:
            return self._predict(uniques[0], struct)
        parts, where = [], []
        for name in uniques:
            idx = pc.indices_nonzero(pc.equal(names, name))
            parts.append(self._predict(name, struct.take(idx)))
            where.append(idx.to_numpy())
        inverse = np.empty(len(struct), dtype=np.int64)
        inverse[np.concatenate(where)] = np.arange(len(struct))
        return pa.concat_arrays(parts).take(pa.array(inverse))

    def _predict(self, name: str, struct: pa.StructArray) -> pa.Array:
        bm = self.model(name)
        fields = struct.flatten()  # parent nulls become field nulls: a NULL struct is a row of nulls
        columns = {struct.type.field(i).name: fields[i] for i in range(struct.type.num_fields)}
        try:
            return bm.predict(columns)
        except BatchError as exc:
            message = f"ai_query('{name}'): {_ROW.sub('', exc.message, count=1)}"
            raise type(exc)(message, column=exc.column) from None

    def _explain(self, exc: Exception) -> str:
        """DuckDB's binder error for a struct that does not fit, said in the model's terms."""
        text = _first_line(exc)
        match = _STRUCT.search(str(exc))
        if match is None or self._registered is None:
            return text
        given = _fields(match["fields"])
        wanted = _fields(self._registered[0][len("STRUCT(") : -1])
        missing = [n for n in wanted if n not in given]
        extra = [n for n in given if n not in wanted]
        if missing:
            return f"ai_query: the struct has no '{missing[0]}' ({wanted[missing[0]]}), which the model requires"
        if extra:
            return f"ai_query: the model takes no '{extra[0]}' (it takes {', '.join(wanted)})"
        for name, kind in given.items():
            got, want = _family(kind), _family(wanted[name])
            if got != want and not (got == "integer" and want == "float"):
                return f"ai_query: column '{name}' is {kind}, but the model takes {wanted[name]}"
        return text


def struct_type(bm: BatchModel) -> str:
    """The DuckDB struct an ``ai_query`` call passes for this model: one field per signature input."""
    fields = []
    for col in bm.signature.inputs:
        kind = _SQL_TYPES.get(col.type, "VARCHAR") + "[]" * len(col.shape)
        fields.append(f'"{col.name}" {kind}' if not col.name.isidentifier() else f"{col.name} {kind}")
    return f"STRUCT({', '.join(fields)})"


def sql_type(t: pa.DataType) -> str:
    """The DuckDB type of a prediction column."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return sql_type(t.value_type) + "[]"
    simple = {
        pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
        pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR", pa.large_string(): "VARCHAR",
    }  # fmt: skip
    if t not in simple:
        raise BatchError(f"ai_query cannot return {t} predictions")
    return simple[t]


def _fields(text: str) -> dict[str, str]:
    """``a INTEGER, "b c" VARCHAR[]`` → ``{"a": "INTEGER", "b c": "VARCHAR[]"}`` (top-level commas only)."""
    out: dict[str, str] = {}
    depth, start = 0, 0
    for i, ch in enumerate(text + ","):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            part = text[start:i].strip()
            start = i + 1
            if part.startswith('"'):
                end = part.index('"', 1)
                out[part[1:end]] = part[end + 1 :].strip()
            elif part:
                name, _, kind = part.partition(" ")
                out[name] = kind.strip()
    return out


def _family(sql_type: str) -> str:
    """Types DuckDB casts into one another implicitly (within a family, and integers to floats)."""
    if _INTEGER.match(sql_type):
        return "integer"
    if _FLOAT.match(sql_type):
        return "float"
    return sql_type


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
