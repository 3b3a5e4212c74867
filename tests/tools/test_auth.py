"""The MCP door as an OAuth 2.1 resource server over the shared Gate: real uvicorn on 127.0.0.1, a JWKS served
locally, the MCP SDK's own client (both protocol eras where sessions and handlers differ)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import ToolsListChanged
from mcp.shared.exceptions import MCPError

from server.main import build, build_gate
from server.ops.acl import AclEntry
from server.ops.gate import Gate
from server.ops.identity import Level, Resource
from server.ops.limits import RateLimit
from server.rest.app import RestApp
from server.service import InferenceService
from server.settings import Settings
from tests.conftest import DemoRegistry, start_server
from tests.jwks import Issuer, serve_issuer
from tests.tools import scenarios
from tests.tools.live import LiveDoor, bind, serve_door
from tests.tools.models import MAX_TOOL_ROWS
from tests.tools.test_agents import load
from tools import McpDoor
from tools.auth import GateAccessToken, local_caller, resource_url
from tools.errors import ERROR_META_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SCOPE = "models:invoke"
ADMIN_SCOPE = "models:admin"
ERAS = ["legacy", "auto"]
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LTV_ROW = scenarios.LTV_ROWS[:1]
PROPENSITY_ROW = scenarios.PROPENSITY_ROWS[:1]


@dataclass
class Secured:
    live: LiveDoor
    gate: Gate
    base: str
    issuer: Issuer | None = None

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def metadata_url(self) -> str:
        return f"{self.base}/.well-known/oauth-protected-resource/mcp"

    @property
    def oauth(self) -> Issuer:
        assert self.issuer is not None
        return self.issuer

    def grant(self, user: str, model: str, level: Level) -> None:
        self.gate.acl.update(Resource("model", model), [AclEntry("user_name", user, level)])

    def pat(self, name: str, **grants: Level) -> str:
        return self.gate.tokens.create(name, grants=grants)


@contextmanager
def secured_door(state_dir: Path, *, oauth: bool = True) -> Iterator[Secured]:
    """The door with auth required, wired by the composition root's ``build_gate`` (tokens and ACLs in auth.db)."""
    sock = bind()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with serve_issuer(f"{base}/mcp") as issuer:
        auth: dict[str, Any] = {"required": True}
        if oauth:
            auth["oauth"] = issuer.settings(required_scopes=[SCOPE], admin_scopes=[ADMIN_SCOPE])
        settings = Settings(
            state_dir=state_dir, port=int(sock.getsockname()[1]), max_tool_rows=MAX_TOOL_ROWS, auth=auth
        )
        gate = build_gate(settings)
        try:
            with serve_door(settings=settings, gate=gate, sock=sock) as live:
                yield Secured(live, gate, base, issuer if oauth else None)
        finally:
            gate.tokens.db.close()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    with secured_door(tmp_path) as s:
        yield s


@asynccontextmanager
async def connect(url: str, token: str | None, mode: str) -> AsyncIterator[tuple[Client, httpx2.AsyncClient]]:
    """The SDK client with ``Authorization: Bearer <token>`` on every request (it takes a configured httpx2 client)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        assert (client.protocol_version == "2026-07-28") == (mode == "auto")
        yield client, http


async def names(client: Client) -> list[str]:
    return sorted(t.name for t in (await client.list_tools()).tools)


def params(response: httpx.Response) -> dict[str, str]:
    """The ``WWW-Authenticate: Bearer k="v", ...`` parameters."""
    value = response.headers["www-authenticate"]
    assert value.startswith("Bearer ")
    out = {}
    for part in value[len("Bearer ") :].split('", '):
        key, _, raw = part.partition("=")
        out[key.strip()] = raw.strip().strip('"')
    return out


# -- the HTTP layer -----------------------------------------------------------------------------------------------


async def test_no_token_is_401_pointing_to_the_rfc9728_document(secured: Secured) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(secured.url, json=INIT, headers=HEADERS)
        assert response.status_code == 401
        p = params(response)
        assert p["resource_metadata"] == secured.metadata_url
        assert p["scope"] == SCOPE and p["error"] == "invalid_token"
        assert "modelport tokens create" in p["error_description"]
        assert "https://issuer.test" in p["error_description"]
        assert response.json()["error_description"] == p["error_description"]

        metadata = await http.get(p["resource_metadata"])
    assert metadata.status_code == 200
    doc = metadata.json()
    assert doc["resource"] == secured.url  # no trailing slash added to either URL
    assert doc["authorization_servers"] == ["https://issuer.test"]
    assert doc["scopes_supported"] == [SCOPE]
    assert doc["bearer_methods_supported"] == ["header"]


@pytest.mark.parametrize("mode", ERAS)
async def test_the_sdk_client_without_a_token_cannot_connect(secured: Secured, mode: str) -> None:
    refused = pytest.RaisesExc(MCPError, match="Server returned an error response")  # the SDK's word for the 401
    with pytest.RaisesGroup(pytest.RaisesGroup(refused)):
        async with connect(secured.url, None, mode):
            pass


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda i: i.token(ttl_s=-3600), "expired"),
        (lambda i: i.token(aud="http://elsewhere.test/mcp"), "audience"),
        (lambda i: i.token(iss="https://evil.test"), "not issued by"),
        (lambda i: i.token(key=i.other), "invalid OAuth token"),
        (lambda i: i.unsigned(), "invalid OAuth token"),
        (lambda i: "mp_not-a-real-token", "invalid, expired or revoked access token"),
        (lambda i: "garbage", "invalid OAuth token"),
    ],
    ids=[
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "forged",
        "alg-none",
        "unknown-pat",
        "garbage",
    ],
)
async def test_bad_tokens_are_401_with_the_reason(secured: Secured, make: Any, reason: str) -> None:
    token = make(secured.oauth)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(secured.url, json=INIT, headers=HEADERS | {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    p = params(response)
    assert p["error"] == "invalid_token"
    assert p["resource_metadata"] == secured.metadata_url
    assert reason in p["error_description"]
    assert token not in response.text


async def test_a_jwt_within_the_leeway_past_exp_is_accepted_as_on_rest(secured: Secured) -> None:
    """The verifier grants ``leeway_s`` (30 s) of clock skew past ``exp``; the SDK's bearer backend checks
    ``expires_at`` itself, so the door hands it ``exp + leeway``: REST and /mcp accept the same tokens."""
    token = secured.oauth.token(ttl_s=-10)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(secured.url, json=INIT, headers=HEADERS | {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert "serverInfo" in response.text


async def test_a_token_without_the_required_scope_is_403_insufficient_scope(secured: Secured) -> None:
    token = secured.oauth.token("alice", scope="profile")
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(secured.url, json=INIT, headers=HEADERS | {"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    p = params(response)
    assert p["error"] == "insufficient_scope"
    assert p["scope"] == SCOPE and SCOPE in p["error_description"]
    assert p["resource_metadata"] == secured.metadata_url


# -- who sees and calls what --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_a_user_lists_and_calls_only_the_models_its_acl_allows(secured: Secured, mode: str) -> None:
    secured.grant("alice", "customer_ltv", Level.CAN_QUERY)
    async with connect(secured.url, secured.oauth.token("alice"), mode) as (client, _):
        assert await names(client) == ["customer_ltv"]
        ok = await client.call_tool("customer_ltv", {"inputs": LTV_ROW})
        assert ok.is_error is False, scenarios.text_of(ok)

        denied = await client.call_tool("customer_propensity", {"inputs": PROPENSITY_ROW})
        assert denied.is_error is True
        text = scenarios.text_of(denied)
        assert "Not allowed" in text and "alice has no permission on model 'customer_propensity'" in text
        assert denied.meta is not None and denied.meta[ERROR_META_KEY]["code"] == "PERMISSION_DENIED"

        with pytest.raises(MCPError, match=r"Available tools: customer_ltv$"):
            await client.call_tool("nope", {})

        cards = [r.uri for r in (await client.list_resources()).resources]
        assert cards == ["modelport://models/customer_ltv/champion"]
        card = await client.read_resource("modelport://models/customer_ltv/champion")
        assert card.contents
        with pytest.raises(MCPError, match="Not allowed: alice has no permission on model 'customer_propensity'"):
            await client.read_resource("modelport://models/customer_propensity/champion")


@pytest.mark.parametrize("mode", ERAS)
async def test_an_admin_sees_and_calls_every_model(secured: Secured, mode: str) -> None:
    async with connect(secured.url, secured.oauth.token("root", scope=f"{SCOPE} {ADMIN_SCOPE}"), mode) as (c, _):
        await scenarios.assert_tools_listed(c)
        await scenarios.assert_scores(c)
        await scenarios.assert_cards(c)


async def test_a_grant_tells_listening_clients_that_their_tools_changed(secured: Secured) -> None:
    """A permission change is a tools/list change for the callers it concerns: both eras are told at once."""
    legacy_heard = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            legacy_heard.set()

    headers = {"Authorization": f"Bearer {secured.oauth.token('carol')}"}
    async with (
        connect(secured.url, secured.oauth.token("carol"), "auto") as (modern, _),
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        Client(streamable_http_client(secured.url, http_client=http), mode="legacy", message_handler=on_message) as old,
    ):
        assert await names(modern) == [] and await names(old) == []
        async with modern.listen(tools_list_changed=True) as sub:
            await anyio.to_thread.run_sync(secured.grant, "carol", "customer_ltv", Level.CAN_QUERY)
            with anyio.fail_after(10):
                event = await sub.__anext__()
                await legacy_heard.wait()
        assert isinstance(event, ToolsListChanged)
        assert await names(modern) == ["customer_ltv"] and await names(old) == ["customer_ltv"]


async def test_a_user_without_any_grant_sees_no_tools(secured: Secured) -> None:
    async with connect(secured.url, secured.oauth.token("nobody"), "auto") as (client, _):
        assert await names(client) == []
        assert (await client.list_resources()).resources == []


async def test_view_permission_shows_the_card_but_not_the_tool(secured: Secured) -> None:
    secured.grant("vera", "customer_ltv", Level.CAN_VIEW)
    async with connect(secured.url, secured.oauth.token("vera"), "auto") as (client, _):
        assert await names(client) == []
        assert [r.uri for r in (await client.list_resources()).resources] == [
            "modelport://models/customer_ltv/champion"
        ]
        denied = await client.call_tool("customer_ltv", {"inputs": LTV_ROW})
        assert denied.is_error is True and "this needs CAN_QUERY" in scenarios.text_of(denied)


@pytest.mark.parametrize("mode", ERAS)
async def test_a_personal_access_token_lists_exactly_its_grant(secured: Secured, mode: str) -> None:
    token = secured.pat("ci", customer_propensity=Level.CAN_QUERY)
    async with connect(secured.url, token, mode) as (client, _):
        assert await names(client) == ["customer_propensity"]
        result = await client.call_tool("customer_propensity", {"inputs": PROPENSITY_ROW})
        assert result.is_error is False, scenarios.text_of(result)
        denied = await client.call_tool("customer_ltv", {"inputs": LTV_ROW})
        assert denied.is_error is True and "ci has no permission" in scenarios.text_of(denied)


@pytest.mark.parametrize("mode", ERAS)
async def test_rate_limits_are_per_model_and_say_when_to_retry(secured: Secured, mode: str) -> None:
    secured.gate.limits.set(Resource("model", "customer_ltv"), [RateLimit(1, "user")])
    token = secured.pat("bot", customer_ltv=Level.CAN_QUERY)
    async with connect(secured.url, token, mode) as (client, _):
        first = await client.call_tool("customer_ltv", {"inputs": LTV_ROW})
        assert first.is_error is False, scenarios.text_of(first)
        second = await client.call_tool("customer_ltv", {"inputs": LTV_ROW})
    assert second.is_error is True
    text = scenarios.text_of(second)
    assert "Rate limit" in text and "Retry after" in text
    assert second.meta is not None
    meta = second.meta[ERROR_META_KEY]
    assert meta["code"] == "REQUEST_LIMIT_EXCEEDED" and 0 < meta["retryAfterSeconds"] <= 60


# -- sessions belong to the credential that opened them ---------------------------------------------------------


async def test_a_session_cannot_be_used_with_another_credential(secured: Secured) -> None:
    alice = {"Authorization": f"Bearer {secured.oauth.token('alice')}"}
    mallory = {"Authorization": f"Bearer {secured.oauth.token('mallory')}"}
    pat = {"Authorization": f"Bearer {secured.pat('alice-pat')}"}
    async with httpx.AsyncClient(timeout=10) as http:
        opened = await http.post(secured.url, json=INIT, headers=HEADERS | alice)
        assert opened.status_code == 200
        session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        ack = await http.post(secured.url, json=INITIALIZED, headers=HEADERS | session | alice)
        assert ack.status_code == 202

        assert (await http.post(secured.url, json=LIST, headers=HEADERS | session | alice)).status_code == 200
        hijack = await http.post(secured.url, json=LIST, headers=HEADERS | session | mallory)
        assert hijack.status_code == 404 and "Session not found" in hijack.text
        other_credential = await http.post(secured.url, json=LIST, headers=HEADERS | session | pat)
        assert other_credential.status_code == 404
        anonymous = await http.post(secured.url, json=LIST, headers=HEADERS | session)
        assert anonymous.status_code == 401
        assert (await http.post(secured.url, json=LIST, headers=HEADERS | session | alice)).status_code == 200


async def test_the_sdk_client_cannot_carry_its_session_to_another_token(secured: Secured) -> None:
    secured.grant("alice", "customer_ltv", Level.CAN_QUERY)
    async with connect(secured.url, secured.oauth.token("alice"), "legacy") as (client, http):
        assert await names(client) == ["customer_ltv"]
        http.headers["Authorization"] = f"Bearer {secured.oauth.token('mallory')}"
        with pytest.raises(MCPError, match="Session not found"):
            await client.list_tools()


# -- the principal inside the handlers --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_handlers_see_the_callers_access_token_in_both_eras(secured: Secured, mode: str) -> None:
    seen: dict[str, Any] = {}

    async def record(ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        seen[ctx.method] = get_access_token()
        return await call_next(ctx)

    secured.live.door.server.middleware.append(record)
    token = secured.pat("ci", customer_ltv=Level.CAN_QUERY)
    async with connect(secured.url, token, mode) as (client, _):
        await client.list_tools()
        await client.call_tool("customer_ltv", {"inputs": LTV_ROW})
    for method in ("tools/list", "tools/call"):
        access = seen[method]
        assert isinstance(access, GateAccessToken), method
        assert (access.client_id, access.subject, access.principal.name) == ("ci", "ci", "ci")
        assert access.claims == {"iss": "token:ci"}
        assert SCOPE in access.scopes  # a personal access token passes the scope check


# -- other configurations -----------------------------------------------------------------------------------------


async def test_tokens_only_no_metadata_document(tmp_path: Path) -> None:
    with secured_door(tmp_path, oauth=False) as secured:
        token = secured.pat("ci", customer_ltv=Level.CAN_QUERY)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(secured.url, json=INIT, headers=HEADERS)
            assert response.status_code == 401
            p = params(response)
            assert "resource_metadata" not in p and "scope" not in p
            assert "modelport tokens create" in p["error_description"]
            assert (await http.get(secured.metadata_url)).status_code == 404
            jwt = await http.post(secured.url, json=INIT, headers=HEADERS | {"Authorization": "Bearer eyJ.x.y"})
            assert jwt.status_code == 401 and "unrecognised bearer token" in params(jwt)["error_description"]
        async with connect(secured.url, token, "auto") as (client, _):
            assert await names(client) == ["customer_ltv"]


async def test_auth_off_leaves_the_door_open(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, max_tool_rows=MAX_TOOL_ROWS)
    gate = build_gate(settings)
    assert gate.enabled is False  # 127.0.0.1 without auth.required
    try:
        with serve_door(settings=settings, gate=gate) as live:
            assert live.door.auth is None
            async with Client(live.url) as client:
                await scenarios.assert_tools_listed(client)
            async with httpx.AsyncClient(timeout=10) as http:
                metadata = await http.get(live.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))
            assert metadata.status_code == 404
    finally:
        gate.tokens.db.close()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"host": "127.0.0.1", "port": 8000}, "http://127.0.0.1:8000/mcp"),
        ({"host": "::1", "port": 9000, "ssl_certfile": "cert.pem"}, "https://[::1]:9000/mcp"),
        ({"auth": {"resource_url": "https://models.example.com/mcp"}}, "https://models.example.com/mcp"),
    ],
)
def test_the_resource_url(overrides: dict[str, Any], expected: str) -> None:
    url = resource_url(Settings(**overrides))
    assert str(url) == expected
    assert str(build_resource_metadata_url(url)) == expected.replace(
        "/mcp", "/.well-known/oauth-protected-resource/mcp"
    )


def test_results_are_private_to_the_caller_when_auth_is_on(secured: Secured) -> None:
    hints = secured.live.door.server.cache_hints
    assert {hint.scope for hint in hints.values()} == {"private"}


@pytest.mark.parametrize("mode", ERAS)
async def test_an_admin_personal_access_token_sees_every_model(secured: Secured, mode: str) -> None:
    token = secured.gate.tokens.create("root", admin=True)
    async with connect(secured.url, token, mode) as (client, _):
        await scenarios.assert_tools_listed(client)
        result = await client.call_tool("customer_propensity", {"inputs": PROPENSITY_ROW})
    assert result.is_error is False


# -- without HTTP: stdio is local, anything else must bring a credential -------------------------------------------


@pytest.fixture
def required_gate(tmp_path: Path) -> Iterator[Gate]:
    gate = build_gate(Settings(state_dir=tmp_path, auth={"required": True}))
    yield gate
    gate.tokens.db.close()


@pytest.mark.parametrize("mode", ERAS)
async def test_in_process_requests_without_a_credential_are_refused(
    service: InferenceService, required_gate: Gate, mode: str
) -> None:
    door = McpDoor(service, Settings(max_tool_rows=MAX_TOOL_ROWS), gate=required_gate)
    async with Client(door.server, mode=mode) as client:
        with pytest.raises(MCPError, match="Not signed in: authentication required"):
            await client.list_tools()
        refused = await client.call_tool("customer_ltv", {"inputs": LTV_ROW})
        assert refused.is_error is True and "Not signed in" in scenarios.text_of(refused)


@pytest.mark.parametrize("mode", ERAS)
async def test_the_local_caller_of_stdio_may_do_everything(
    service: InferenceService, required_gate: Gate, mode: str
) -> None:
    door = McpDoor(service, Settings(max_tool_rows=MAX_TOOL_ROWS), gate=required_gate)
    with local_caller():  # what run_stdio does around the stdio server
        async with Client(door.server, mode=mode) as client:
            await scenarios.assert_tools_listed(client)
            await scenarios.assert_scores(client)
            await scenarios.assert_cards(client)


async def test_rate_limits_apply_with_auth_off_as_on_rest(service: InferenceService, tmp_path: Path) -> None:
    gate = build_gate(Settings(state_dir=tmp_path))
    try:
        gate.limits.set(Resource("model", "customer_propensity"), [RateLimit(1, "endpoint")])
        door = McpDoor(service, Settings(max_tool_rows=MAX_TOOL_ROWS), gate=gate)
        async with Client(door.server) as client:
            assert await names(client) == ["customer_ltv", "customer_propensity"]
            first = await client.call_tool("customer_propensity", {"inputs": PROPENSITY_ROW})
            second = await client.call_tool("customer_propensity", {"inputs": PROPENSITY_ROW})
        assert first.is_error is False and second.is_error is True
        assert "anonymous" in scenarios.text_of(second) and "Retry after" in scenarios.text_of(second)
    finally:
        gate.tokens.db.close()


# -- the composition root -----------------------------------------------------------------------------------------


async def test_the_full_app_guards_mcp_and_keeps_the_rest_fast_path(
    demo_registry: DemoRegistry, tmp_path: Path
) -> None:
    public = "https://models.example.com/mcp"  # behind a proxy: auth.resource_url names the public URL
    with serve_issuer(public) as issuer:
        settings = Settings(
            state_dir=tmp_path,
            registry_uri=demo_registry.tracking_uri,
            models=tuple(ref.uri for ref in demo_registry.refs),
            auth={"required": True, "resource_url": public, "oauth": issuer.settings(required_scopes=[SCOPE])},
        )
        components = build(settings)
        server, thread, base = start_server(components, components.app)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                assert (await http.get("/ping")).status_code == 200  # the lifespan has loaded the model
                refused = await http.post("/mcp", json=INIT, headers=HEADERS)
                assert refused.status_code == 401
                metadata_url = "https://models.example.com/.well-known/oauth-protected-resource/mcp"
                assert params(refused)["resource_metadata"] == metadata_url
                doc = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
                assert doc["resource"] == public and doc["authorization_servers"] == [issuer.issuer]
            app = components.app
            assert isinstance(app, RestApp) and app._fast_allowed()  # /mcp is a route, not app-wide middleware
            gate = components.gate
            assert gate is not None
            gate.acl.update(Resource("model", "fraud_detector"), [AclEntry("user_name", "alice", Level.CAN_QUERY)])
            async with connect(f"{base}/mcp", issuer.token("alice"), "auto") as (client, _):
                assert await names(client) == ["fraud_detector"]

            # the example program with a personal access token (what `modelport tokens create --grant` makes)
            grants = {"customer_propensity": Level.CAN_QUERY, "customer_ltv": Level.CAN_QUERY}
            pat = gate.tokens.create("agent", grants=grants)
            score_customer = load("score_customer").score_customer
            for mode in ERAS:
                out = await score_customer(f"{base}/mcp", mode=mode, token=pat)
                assert out["tools"] == ["customer_ltv", "customer_propensity"]
                assert out["expected_value_eur"] > 0

            # the pydantic-ai agent with the same token: its LLM (TestModel here) is offered only those tools
            pytest.importorskip("pydantic_ai.mcp")
            from pydantic_ai.messages import ToolReturnPart
            from pydantic_ai.models.test import TestModel

            agent = load("pydantic_agent").build_agent(f"{base}/mcp", TestModel(), token=pat)
            result = await agent.run("Score a customer with every model.")
            parts = [p for m in result.all_messages() for p in m.parts]
            assert {p.tool_name for p in parts if isinstance(p, ToolReturnPart)} == {
                "customer_ltv",
                "customer_propensity",
            }
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            assert components.gate is not None
            components.gate.tokens.db.close()
