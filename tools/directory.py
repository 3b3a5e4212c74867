"""Catalogue mode: three tools that reach every served model, for registries too large to publish one tool each.

Setting ``mcp_tools``: ``per_model`` (default: one tool per deployment), ``catalog`` (only the three tools below) or
``both`` (the three first, then one per deployment; a model tool whose name is one of the three is not listed, its
model stays reachable through ``predict``).

* ``search_models(query, tags, limit)``: the served models the caller may query, ranked (``tools.search``).
* ``describe_model(model)``: that model's tool description, input and output schemas, and an example ``predict``
  call.
* ``predict(model, inputs, params)``: ``inputs`` is the rows as JSON text (a JSON array is accepted too), so the
  tool's own schema stays closed for strict function calling; the rows then go through exactly the path of a
  per-model tool call (``ToolServer.score``: permission, rate limit, validation against that model's input schema,
  the shared batcher, recording).

A model is named as ``search_models`` returns it (``model``: the deployment, ``name@alias`` or ``name/version``),
or by its tool name, its registered name (when one deployment serves it) or ``models:/...`` URI. Unknown, ambiguous
and forbidden models are ``isError`` results (the tool exists; the argument is wrong, and the agent can fix it with
``search_models``), as is any invalid argument. Visibility follows ``tools/list``: ``CAN_QUERY`` on the model.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

import mcp.types as types
from mcp.server import ServerRequestContext

from server.errors import InvalidInput, PermissionDenied
from server.ops.identity import Level, Principal
from server.service import InferenceService
from tools.auth import ToolAccess
from tools.catalog import Catalog, ToolSpec
from tools.errors import error_result, tool_error
from tools.search import Entry, entry, rank

Mode = Literal["per_model", "catalog", "both"]
Score = Callable[
    [ServerRequestContext[Any], ToolSpec, Principal, dict[str, Any] | None, dict[str, Any]],
    Awaitable[types.CallToolResult],
]

SEARCH, DESCRIBE, PREDICT = "search_models", "describe_model", "predict"
NAMES = (SEARCH, DESCRIBE, PREDICT)
DEFAULT_LIMIT, MAX_LIMIT = 10, 50
INSTRUCTIONS = (
    "Every served MLflow model is reachable through three tools: search_models finds models by what they predict "
    "and the inputs they take, describe_model gives one model's input schema and an example call, and predict "
    'scores rows with it ({"model": ..., "inputs": "<JSON array of row objects>"}). Results are '
    '{"predictions": [...]}, one entry per row. Model cards are resources modelport://models/{name}/{version}.'
)
_ANNOTATIONS = types.ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


def _nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "description": description}


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


_STRING = {"type": "string"}
_COLUMN = _closed(
    {
        "name": _STRING,
        "type": _STRING,
        "unit": {"anyOf": [_STRING, {"type": "null"}]},
        "description": {"anyOf": [_STRING, {"type": "null"}]},
    }
)
_HIT = _closed(
    {
        "model": {"type": "string", "description": "Pass this to describe_model and predict."},
        "name": _STRING,
        "version": _STRING,
        "aliases": {"type": "array", "items": _STRING},
        "description": _STRING,
        "output": {"type": "string", "description": "What each prediction is."},
        "columns": {"type": "array", "items": _COLUMN},
        "tool": {"anyOf": [_STRING, {"type": "null"}], "description": "The model's own tool, when it is listed."},
        "score": {"type": "number"},
    }
)
SEARCH_INPUT = _closed(
    {
        "query": {
            "type": "string",
            "description": "Words for what to predict or the inputs at hand, e.g. 'customer lifetime value'; "
            "an empty string lists every model by name.",
        },
        "tags": _nullable(
            {"type": "array", "items": _STRING},
            "Only models carrying every one of these registry tags, each 'key' or 'key=value'; null: any.",
        ),
        "limit": _nullable({"type": "integer"}, f"Most models to return, 1 to {MAX_LIMIT}; null: {DEFAULT_LIMIT}."),
    }
)
SEARCH_OUTPUT = _closed(
    {"models": {"type": "array", "items": _HIT}, "total": {"type": "integer", "description": "Models that matched."}}
)
_MODEL_ARG = {
    "type": "string",
    "description": "The model as search_models returns it in 'model' (e.g. 'customer_ltv@champion'); a registered "
    "model name or a tool name works too.",
}
DESCRIBE_INPUT = _closed({"model": _MODEL_ARG})


def predict_input(max_rows: int) -> dict[str, Any]:
    return _closed(
        {
            "model": _MODEL_ARG,
            "inputs": {
                "type": "string",
                "description": "The rows to score as JSON text: an array of objects, one per row, with the fields "
                f'describe_model lists, e.g. \'[{{"age": 35, "visits": 4}}]\'. At most {max_rows} rows.',
            },
            "params": _nullable(
                {"type": "string"}, "Inference parameters as JSON object text, if the model takes any; else null."
            ),
        }
    )


# -- the tools ----------------------------------------------------------------------------------------------------


class Directory:
    """The catalogue tools of one ``ToolServer``.

    Args:
        mode: ``per_model``, ``catalog`` or ``both`` (setting ``mcp_tools``).
        service: the shared inference service (for the models' metadata).
        access: the caller's permissions (search, describe and predict see what ``tools/list`` would).
        score: ``ToolServer.score``, the one scoring path of tool calls.
    """

    def __init__(self, mode: Mode, service: InferenceService, access: ToolAccess, score: Score) -> None:
        if mode not in ("per_model", "catalog", "both"):
            raise ValueError(f"mcp_tools must be per_model, catalog or both, not {mode!r}")
        self.mode = mode
        self.service = service
        self.access = access
        self._score = score
        self._entries: dict[int, Entry] = {}
        self._tools = [
            types.Tool(
                name=SEARCH,
                title="Search the served models",
                description="Find served MLflow models by what they predict, their inputs, units, aliases or tags. "
                "Returns the best matches first, each with its columns and the 'model' to pass to describe_model "
                "and predict.",
                input_schema=SEARCH_INPUT,
                output_schema=SEARCH_OUTPUT,
                annotations=_ANNOTATIONS,
            ),
            types.Tool(
                name=DESCRIBE,
                title="Describe a served model",
                description="One served model in full: what it predicts, the input schema of its rows (every "
                "field's type, unit, meaning and allowed values), its output schema and an example predict call.",
                input_schema=DESCRIBE_INPUT,
                annotations=_ANNOTATIONS,
            ),
            types.Tool(
                name=PREDICT,
                title="Score rows with a served model",
                description="Score rows with one served model. Call describe_model first for the fields of a row. "
                'Returns {"predictions": [...]}, one entry per row, in order (the same answer as the model\'s own '
                "tool). Arguments are checked against the model's input schema; errors name the field.",
                input_schema=predict_input(service.max_tool_rows),
                annotations=_ANNOTATIONS,
            ),
        ]

    @property
    def per_model(self) -> bool:
        """Whether one tool per deployment is published."""
        return self.mode != "catalog"

    @property
    def names(self) -> tuple[str, ...]:
        """The catalogue tools published (none in ``per_model`` mode)."""
        return () if self.mode == "per_model" else NAMES

    def tools(self) -> list[types.Tool]:
        return [] if self.mode == "per_model" else list(self._tools)

    def input_schema(self, name: str) -> dict[str, Any] | None:
        tool = next((t for t in self.tools() if t.name == name), None)
        return None if tool is None else tool.input_schema

    def instructions(self, per_model: str) -> str:
        """The server's instructions for this mode (``per_model``: those of the per-model tools)."""
        if self.mode == "per_model":
            return per_model
        return INSTRUCTIONS if self.mode == "catalog" else f"{per_model} {INSTRUCTIONS}"

    async def call(
        self,
        ctx: ServerRequestContext[Any],
        name: str,
        arguments: Mapping[str, Any] | None,
        catalog: Catalog,
        principal: Principal,
        state: dict[str, Any],
    ) -> types.CallToolResult:
        args = dict(arguments or {})
        schema_props = (self.input_schema(name) or {}).get("properties", {})
        unknown = sorted(set(args) - set(schema_props))
        if unknown:
            return _invalid(
                f"Invalid arguments for {name}: unknown argument(s) {json.dumps(unknown)}; it takes "
                f"{json.dumps(list(schema_props))}."
            )
        if name == SEARCH:
            return self._search(catalog, principal, args)
        model = args.get("model")
        if not isinstance(model, str) or not model.strip():
            return _invalid(
                f"Invalid arguments for {name}: 'model' must name a served model, as search_models returns it."
            )
        found = self._find(catalog, principal, model)
        if isinstance(found, types.CallToolResult):
            return found
        if name == DESCRIBE:
            return self._describe(found, principal)
        return await self._predict(ctx, found, principal, args, state)

    # -- search and describe ----------------------------------------------------------------------------------

    def visible(self, catalog: Catalog, principal: Principal) -> list[ToolSpec]:
        if not self.access.per_caller:
            return list(catalog.tools)
        return [s for s in catalog.tools if self.access.may(principal, s.model_name, Level.CAN_QUERY)]

    def entries(self, specs: Iterable[ToolSpec]) -> list[Entry]:
        """Search entries of ``specs``, reused while a deployment does not change."""
        specs = list(specs)
        missing = [s for s in specs if (e := self._entries.get(id(s))) is None or e.spec is not s]
        if missing:
            infos = {info.key: info for info in self.service.list()}
            for spec in missing:
                info = infos.get(spec.key)
                if info is not None:
                    self._entries[id(spec)] = entry(spec, info)
            live = {id(s) for s in specs}
            self._entries = {k: e for k, e in self._entries.items() if k in live}
        return [e for s in specs if (e := self._entries.get(id(s))) is not None and e.spec is s]

    def _search(self, catalog: Catalog, principal: Principal, args: Mapping[str, Any]) -> types.CallToolResult:
        query, tags, limit = args.get("query"), args.get("tags"), args.get("limit")
        if query is None:
            query = ""
        if not isinstance(query, str):
            return _invalid(f"Invalid arguments for {SEARCH}: 'query' must be a string (empty for every model).")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            return _invalid(f"Invalid arguments for {SEARCH}: 'tags' must be a list of strings or null.")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            return _invalid(
                f"Invalid arguments for {SEARCH}: 'limit' must be an integer from 1 to {MAX_LIMIT}, or null."
            )
        ranked = rank(self.entries(self.visible(catalog, principal)), query, tags or ())
        hits = [
            dict(item.hit) | {"tool": self.tool_of(item.spec), "score": round(score, 3)}
            for score, item in ranked[: min(limit or DEFAULT_LIMIT, MAX_LIMIT)]
        ]
        return _result({"models": hits, "total": len(ranked)})

    def tool_of(self, spec: ToolSpec) -> str | None:
        """The model's own tool, when it is listed (a catalogue tool's name shadows a model tool's)."""
        return spec.name if self.per_model and spec.name not in self.names else None

    def _describe(self, spec: ToolSpec, principal: Principal) -> types.CallToolResult:
        if self.access.per_caller:
            try:
                self.access.authorize(principal, spec.model_name, Level.CAN_QUERY)
            except PermissionDenied as exc:
                return tool_error(exc, spec)
        example = None
        if spec.example is not None:
            example = {"model": spec.key, "inputs": json.dumps(spec.example["inputs"]), "params": None}
        return _result(
            {
                "model": spec.key,
                "name": spec.model_name,
                "version": spec.version,
                "tool": self.tool_of(spec),
                "description": spec.description,
                "inputSchema": spec.input_schema,
                "outputSchema": spec.output_schema,
                "examplePredictCall": example,
                "restPath": spec.rest_path,
                "card": spec.card_uri,
            }
        )

    # -- predict ----------------------------------------------------------------------------------------------

    async def _predict(
        self,
        ctx: ServerRequestContext[Any],
        spec: ToolSpec,
        principal: Principal,
        args: Mapping[str, Any],
        state: dict[str, Any],
    ) -> types.CallToolResult:
        rows = _json_arg(args.get("inputs"), "inputs", list, "an array of row objects")
        if isinstance(rows, InvalidInput):
            return tool_error(rows, spec)
        params = _json_arg(args.get("params"), "params", dict, "an object")
        if isinstance(params, InvalidInput):
            return tool_error(params, spec)
        call: dict[str, Any] = {"inputs": rows}
        if params is not None or "params" in spec.input_schema.get("required", ()):
            call["params"] = params  # the portable schema takes an explicit null
        return await self._score(ctx, spec, principal, call, state)

    def _find(self, catalog: Catalog, principal: Principal, ref: str) -> ToolSpec | types.CallToolResult:
        ref = ref.strip().removeprefix("models:/")
        found = [s for s in catalog.tools if ref in (s.key, s.name)]
        if not found:
            found = [s for s in catalog.tools if s.model_name == ref]
            if len(found) > 1:
                visible = self.visible(Catalog(tuple(found)), principal)
                if len(visible) == 1:
                    return visible[0]
                if visible:
                    choices = json.dumps([s.key for s in visible])
                    return _invalid(f"Model '{ref}' is served as several deployments; pick one of {choices}.")
        if found:
            return found[0]
        best = [item.spec.key for _, item in rank(self.entries(self.visible(catalog, principal)), ref)[:5]]
        hint = f"Closest matches: {json.dumps(best)}." if best else "Call search_models to find one."
        return _invalid(f"No served model '{ref}'. {hint}", code="RESOURCE_DOES_NOT_EXIST", status=404)


def _json_arg(value: Any, name: str, kind: type, words: str) -> Any:
    """An argument given as JSON text (or, leniently, as the JSON value itself); ``InvalidInput`` when unusable."""
    if value is None:
        return None if name == "params" else InvalidInput(f"{name}: required, {words} as JSON text", field=name)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            return InvalidInput(f"{name}: not valid JSON ({exc}); send {words} as JSON text", field=name)
    if not isinstance(value, kind):
        hint = "; wrap a single row in a list" if name == "inputs" and isinstance(value, dict) else ""
        return InvalidInput(f"{name}: expected {words}, got {type(value).__name__}{hint}", field=name)
    return value


def _invalid(text: str, *, code: str = "BAD_REQUEST", status: int = 400) -> types.CallToolResult:
    kind = "ModelNotFound" if status == 404 else "InvalidInput"
    return error_result(text, {"code": code, "type": kind, "status": status})


def _result(payload: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(payload, separators=(",", ":"), default=str)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=payload)


__all__ = ["DESCRIBE", "NAMES", "PREDICT", "SEARCH", "Directory", "Mode"]
