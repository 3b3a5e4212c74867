"""The low-level MCP ``Server`` over the live deployment table: one typed tool and one model card per deployment.

We use the low-level ``mcp.server.Server`` (not ``MCPServer``) so our generated schemas are published exactly as
written. It validates nothing itself: arguments are checked here against the published ``inputSchema``
(``tools.checks``), and every tool passes the schema checklist and both protocol eras' wire types before it is listed.

Change notifications reach both protocol eras (``notify_changed``): 2026-07-28 clients through
``subscriptions/listen`` streams (the subscription bus), handshake-era clients on their connection's standalone
stream. The SDK has no public registry of legacy connections, so a server middleware records them as they talk to us.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import anyio
import mcp.types as types
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.caching import CacheHint
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourcesListChanged, ToolsListChanged
from mcp_types.methods import serialize_server_result
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION
from pydantic import ValidationError

from server.errors import InferenceFailed, PermissionDenied, RateLimited, Unauthenticated
from server.ops.gate import Gate
from server.ops.identity import Level, Principal
from server.ops.record import Recorder
from server.service import InferenceService
from tools.arguments import validate_arguments
from tools.auth import ToolAccess
from tools.catalog import META_KEY, Catalog, CatalogBuilder, ToolSpec
from tools.directory import Directory, Mode
from tools.errors import access_denied, error_result, status_of, tool_error, unknown_tool
from tools.paging import page
from tools.resources import card_templates, list_cards, parse_card_uri, read_card
from tools.shapes import Dialect
from tools.status import STATUS_URI, failure_note, model_name, read_status, status_resource, unserved_failures

log = logging.getLogger(__name__)

M = TypeVar("M", bound=types.Tool | types.Resource)


def _json_size(item: types.Tool | types.Resource) -> int:
    """Bytes of one tool or card as it goes over the wire (what a page's byte cap counts)."""
    return len(item.model_dump_json(by_alias=True, exclude_none=True))


SERVER_NAME = "modelport"
INSTRUCTIONS = (
    'Each tool scores rows with one served MLflow model. Call a tool with {"inputs": [{column: value}, ...]}; its '
    "description lists every column (type, unit, allowed values) and gives an example call. Results are "
    '{"predictions": [...]}, one entry per row. Model cards (metrics, lineage, signature) are resources '
    "modelport://models/{name}/{version}. For bulk scoring use the REST path named in each tool's description."
)
_NOTIFY_TIMEOUT_S = 5.0
_CATALOG_TTL_S = 1.0
_CALLS = itertools.count(1)
_ERAS = (LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION)
_ANNOTATIONS = dict(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def _version() -> str:
    try:
        return version("modelport")
    except PackageNotFoundError:
        return "0.0.0"


class _DoorServer(Server[Any]):
    """A ``Server`` that announces ``listChanged`` to handshake-era clients too.

    The SDK's HTTP runner builds the ``initialize`` result without ``NotificationOptions``, which would advertise
    ``tools.listChanged: false`` to legacy clients although we do send the notification.

    ``instructions`` is read by the SDK when it answers ``initialize`` and ``server/discover``; ``failure_note`` (set
    by ``ToolServer``) appends the models that failed to load at that moment.
    """

    failure_note: Callable[[], str | None] | None = None

    @property  # type: ignore[override]
    def instructions(self) -> str | None:
        note = self.failure_note() if self.failure_note is not None else None
        return self._instructions if not note else f"{self._instructions or ''} {note}".strip()

    @instructions.setter
    def instructions(self, value: str | None) -> None:
        self._instructions = value

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(tools_changed=True, resources_changed=True)
        return super().create_initialization_options(options, experimental_capabilities, extensions)


class ToolServer:
    """Builds and serves the MCP view of an ``InferenceService``.

    Args:
        service: the shared inference service (the same one REST uses).
        name: the server name announced to clients.
        gate: identity, permissions and rate limits (``tools/auth.py``): each caller lists the tools it may query
            and the cards it may view; calls are authorized and rate-limited. ``None``: everything is open.
        page_size: tools and model cards per ``tools/list`` / ``resources/list`` page (``tools/paging.py``).
        page_bytes: and at most this many bytes of them (JSON) per page.
        tools_mode: ``per_model``, ``catalog`` or ``both`` (``tools/directory.py``).
    """

    def __init__(
        self,
        service: InferenceService,
        *,
        name: str = SERVER_NAME,
        gate: Gate | None = None,
        page_size: int = 100,
        page_bytes: int = 512 * 1024,
        tools_mode: Mode = "per_model",
        recorder: Recorder | None = None,
        schema_dialect: Dialect = "portable",
    ) -> None:
        self.recorder = recorder
        self.service = service
        self.access = ToolAccess(gate)
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self.page_size = page_size
        self.page_bytes = page_bytes
        self.directory = Directory(tools_mode, service, self.access, self.score)
        self._builder = CatalogBuilder(dialect=schema_dialect, max_rows=service.max_tool_rows)
        self._changes = 0
        self._cached: tuple[int, float, Catalog] | None = None
        service.subscribe(self._changed)
        self._published: dict[int, tuple[ToolSpec, types.Tool | None]] = {}
        self._legacy: weakref.WeakSet[Connection] = weakref.WeakSet()
        hint = CacheHint(ttl_ms=0, scope="private" if self.access.per_caller else "public")
        self.server = _DoorServer(
            name,
            version=_version(),
            title="modelport: MLflow models as tools",
            instructions=self.directory.instructions(INSTRUCTIONS),
            cache_hints={
                "tools/list": hint,
                "resources/list": hint,
                "resources/templates/list": hint,
                "resources/read": hint,
            },
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource,
            on_subscriptions_listen=self.listen,
        )
        self.server.middleware.append(self._track_legacy)
        if not self.access.per_caller:  # one text for every caller: with auth on, failures only in modelport://status
            self.server.failure_note = lambda: failure_note(unserved_failures(self.service))

    # -- catalogue ----------------------------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        """The tools of the deployments served right now: rebuilt after a change of the deployment table, and at
        least every ``_CATALOG_TTL_S`` (a deployment's state can move without one), not on every request (the pages
        of one listing of 500 models would each rebuild it)."""
        now = time.monotonic()
        cached = self._cached
        if cached is not None and cached[0] == self._changes and now - cached[1] < _CATALOG_TTL_S:
            return cached[2]
        changes = self._changes
        catalog = self._builder.build(self.service.list())
        self._cached = (changes, now, catalog)
        return catalog

    def _changed(self) -> None:
        self._changes += 1  # from any thread; a race only costs one more rebuild

    def tools(self, catalog: Catalog | None = None) -> list[types.Tool]:
        """The published tools: every spec that also passes both protocol eras' wire types."""
        catalog = catalog or self.catalog()
        published: dict[int, tuple[ToolSpec, types.Tool | None]] = {}
        for spec in catalog.tools:
            entry = self._published.get(id(spec))
            if entry is None or entry[0] is not spec:
                entry = (spec, _wire_checked(spec))
            published[id(spec)] = entry
        self._published = published
        return [tool for _, tool in published.values() if tool is not None]

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        if name in self.directory.names:
            return self.directory.input_schema(name)
        spec = self.catalog().get(name) if self.directory.per_model else None
        return None if spec is None else spec.input_schema

    # -- handlers -----------------------------------------------------------------------------------------------

    def _caller(self, ctx: ServerRequestContext[Any]) -> Principal:
        try:
            return self.access.caller(ctx)
        except Unauthenticated as exc:  # the HTTP layer answers 401 before; this is the fail-closed backstop
            raise access_denied(exc) from None

    def _visible(self, catalog: Catalog, principal: Principal, level: Level) -> list[ToolSpec]:
        return [spec for spec in catalog.tools if self.access.may(principal, spec.model_name, level)]

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools: list[types.Tool] = []
        if self.directory.per_model:  # catalogue mode lists three fixed tools: no catalogue to build
            catalog = self.catalog()
            tools = self.tools(catalog)
            if self.access.per_caller and tools:
                allowed = {spec.name for spec in self._visible(catalog, self._caller(ctx), Level.CAN_QUERY)}
                tools = [tool for tool in tools if tool.name in allowed]
        # the catalogue tools first, then one per model (a catalogue tool's name shadows a model tool's)
        items = [(f"0:{tool.name}", tool) for tool in self.directory.tools()]
        items += [(f"1:{tool.name}", tool) for tool in tools if tool.name not in self.directory.names]
        listed, cursor = self._page("tools/list", items, params)
        return types.ListToolsResult(tools=listed, next_cursor=cursor)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """Score, then record the call like REST records a request (door ``mcp``: metrics, inference tables)."""
        recorder = self.recorder
        if recorder is None:
            return await self._score(ctx, params, {})
        started = time.perf_counter()
        state: dict[str, Any] = {"request_id": f"mcp-{next(_CALLS):x}"}
        result = await self._score(ctx, params, state)
        if "model" in state:
            capture = recorder.capture
            if capture is not None and capture.wants(state["model"], None):
                state["body"] = json.dumps(params.arguments or {}, separators=(",", ":"), default=str).encode()
                state["response"] = json.dumps(result.structured_content).encode() if not result.is_error else None
                state["content_type"] = "application/json"
            recorder.record("mcp", state, status_of(result), started)
        return result

    async def _score(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams, state: dict[str, Any]
    ) -> types.CallToolResult:
        catalog = self.catalog()
        catalogue_tool = params.name in self.directory.names
        spec = catalog.get(params.name) if self.directory.per_model and not catalogue_tool else None
        try:
            principal = self.access.caller(ctx)
        except Unauthenticated as exc:  # the HTTP layer answers 401 before; this is the fail-closed backstop
            if spec is None and not catalogue_tool:
                raise unknown_tool(params.name, []) from None
            if spec is None:
                meta = {"code": exc.error_code, "type": "Unauthenticated", "status": 401}
                return error_result(f"Not signed in to modelport ({exc.message}).", meta)
            return tool_error(exc, spec)
        if catalogue_tool:
            return await self.directory.call(ctx, params.name, params.arguments, catalog, principal, state)
        if spec is None:
            listed = self._visible(catalog, principal, Level.CAN_QUERY) if self.directory.per_model else []
            raise unknown_tool(params.name, [*self.directory.names, *(s.name for s in listed)])
        return await self.score(ctx, spec, principal, params.arguments, state)

    async def score(
        self,
        ctx: ServerRequestContext[Any],
        spec: ToolSpec,
        principal: Principal,
        arguments: dict[str, Any] | None,
        state: dict[str, Any],
    ) -> types.CallToolResult:
        """The one scoring path of a model's tool and of the catalogue's ``predict``: permission and rate limit,
        validation against the model tool's ``inputSchema``, then ``InferenceService.predict_records`` (the shared
        batcher); ``state`` collects what ``_call_tool`` records."""
        state["model"], state["principal"] = spec.model_name, principal.name if principal is not None else None
        if spec.selector is not None and not spec.selector.isdigit():
            state["alias"] = spec.selector
        elif spec.selector is not None:
            state["version"] = spec.selector
        try:
            self.access.enter_call(principal, spec.model_name)
        except (PermissionDenied, RateLimited) as exc:
            return tool_error(exc, spec)
        limit = self.service.max_tool_rows
        problem = validate_arguments(spec.input_schema, arguments, max_rows=limit)
        if problem is not None:
            return tool_error(problem, spec)
        args = arguments or {}
        rows = spec.shape.rows(args["inputs"])  # property keys → column names, null optional values → absent
        await ctx.session.report_progress(0, 1, f"scoring {len(rows)} row(s) with {spec.title}")
        try:
            prediction = await self.service.predict_records(
                spec.model_name, spec.selector, rows, spec.shape.params(args.get("params")), max_rows=limit
            )
            structured = spec.shape.output(prediction.structured())
        except Exception as exc:  # every failure becomes an isError result the agent can read
            state["error"] = getattr(exc, "message", None) or type(exc).__name__
            return tool_error(exc, spec)
        state["version"], state["rows"] = prediction.version, prediction.rows
        try:
            text = json.dumps(structured, allow_nan=False, separators=(",", ":"))
        except ValueError as exc:  # NaN or infinity cannot be sent as JSON
            return tool_error(InferenceFailed(f"the model returned values that are not valid JSON ({exc})"), spec)
        await ctx.session.report_progress(1, 1, "done")
        meta = {
            META_KEY: {
                "name": prediction.name,
                "version": prediction.version,
                "deployment": spec.key,
                "batchRows": prediction.batch_rows,
                "batchRequests": prediction.batch_requests,
            }
        }
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=structured, _meta=meta
        )

    async def _list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        catalog = self.catalog()
        specs = self._visible(catalog, self._caller(ctx), Level.CAN_VIEW) if self.access.per_caller else catalog.tools
        resources = list_cards(specs)
        failed = unserved_failures(self.service)
        if failed and self.access.per_caller:
            principal = self._caller(ctx)
            failed = {k: r for k, r in failed.items() if self.access.may(principal, model_name(k), Level.CAN_VIEW)}
        if failed:  # listed while a model is failing (readable always)
            resources.append(status_resource())
        items = sorted(((str(r.uri), r) for r in resources), key=lambda item: item[0])
        listed, cursor = self._page("resources/list", items, params)
        return types.ListResourcesResult(resources=listed, next_cursor=cursor)

    def _page(
        self, listing: str, items: Sequence[tuple[str, M]], params: types.PaginatedRequestParams | None
    ) -> tuple[list[M], str | None]:
        """One page: ``page_size`` items at most, and ``page_bytes`` of their JSON."""
        cursor = params.cursor if params else None
        return page(listing, items, cursor, self.page_size, max_bytes=self.page_bytes, size_of=_json_size)

    async def _list_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=card_templates())

    async def _read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        if uri == STATUS_URI:
            if not self.access.per_caller:
                return read_status(self.service)
            principal = self._caller(ctx)
            return read_status(self.service, lambda name: self.access.may(principal, name, Level.CAN_VIEW))
        parsed = parse_card_uri(uri)
        if parsed is not None and self.access.per_caller:
            try:
                self.access.authorize(self._caller(ctx), parsed[0], Level.CAN_VIEW)
            except PermissionDenied as exc:
                raise access_denied(exc, uri=uri) from None
        return read_card(self.service, uri, self.catalog())

    # -- change notifications -----------------------------------------------------------------------------------

    async def _track_legacy(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        # NOTE: ServerSession keeps its connection private in mcp 2.3 and there is no public registry of legacy
        # connections; a weak set lets finished connections go away on their own.
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            connection = getattr(ctx.session, "_connection", None)
            if isinstance(connection, Connection) and connection.has_standalone_channel:
                self._legacy.add(connection)
        return await call_next(ctx)

    @property
    def legacy_connections(self) -> int:
        """Handshake-era connections that will be told about changes."""
        return len(self._legacy)

    async def notify_changed(self) -> None:
        """Tell every client of both eras that the tool and resource lists changed."""
        await self.bus.publish(ToolsListChanged())
        await self.bus.publish(ResourcesListChanged())
        for connection in list(self._legacy):
            try:
                with anyio.fail_after(_NOTIFY_TIMEOUT_S):
                    await connection.send_tool_list_changed()
                    await connection.send_resource_list_changed()
            except Exception as exc:  # a gone client must not stop the others from hearing about it
                log.debug("dropping a legacy MCP connection that could not be notified: %r", exc)
                self._legacy.discard(connection)


def _wire_checked(spec: ToolSpec) -> types.Tool | None:
    tool = types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        annotations=types.ToolAnnotations(**_ANNOTATIONS),  # shown under the tool's own title
        _meta=spec.meta,
    )
    wire = {
        "tools": [tool.model_dump(by_alias=True, mode="json", exclude_none=True)],
        "ttlMs": 0,
        "cacheScope": "public",
        "resultType": "complete",
    }
    for era in _ERAS:
        try:
            serialize_server_result("tools/list", era, wire)
        except (ValidationError, KeyError, ValueError) as exc:
            log.warning("model %s is not published as an MCP tool: invalid for protocol %s: %s", spec.key, era, exc)
            return None
    return tool
