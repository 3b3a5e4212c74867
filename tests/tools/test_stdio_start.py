"""``modelport mcp --stdio`` never starts an empty server: it fails at start (exit 2, the reason on stderr, nothing on
stdout, nothing created in the working directory), or serves what loaded and publishes what failed.

Each case runs the real command in an empty working directory, as an MCP client would start it, and talks to it with
the MCP SDK's stdio client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

import mcp.types as types
import mlflow
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from server.service import InferenceService
from tests.conftest import DemoRegistry
from tools import McpDoor
from tools.status import failure_note, read_status

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

MODELPORT = str(Path(sys.executable).with_name("modelport"))
STATUS = "modelport://status"
TIMEOUT_S = 180


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "MLFLOW_"))}
    return env | {"PYTHONUNBUFFERED": "1", "MODELPORT_LOG_FORMAT": "json"}


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """An empty working directory (the client's): it must stay empty."""
    path = tmp_path / "client-cwd"
    path.mkdir()
    return path


def _start(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command with stdin closed at once: a server that starts would serve nothing and exit 0."""
    return subprocess.run(
        [MODELPORT, "mcp", "--stdio", *args],
        cwd=cwd, input="", capture_output=True, text=True, timeout=TIMEOUT_S, env=_env(), check=False,
    )  # fmt: skip


def _params(cwd: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=MODELPORT, args=["mcp", "--stdio", *args], cwd=str(cwd), env=_env())


@asynccontextmanager
async def _client(params: StdioServerParameters, errlog: TextIO, mode: str = "auto") -> AsyncIterator[Client]:
    async with Client(stdio_client(params, errlog=errlog), mode=mode, read_timeout_seconds=TIMEOUT_S) as client:
        yield client


async def _refused_by_the_sdk_client(params: StdioServerParameters, errlog: Path) -> str:
    """The SDK client cannot connect (the process exits before answering); what the server wrote on stderr."""
    for mode in ("legacy", "auto"):
        with errlog.open("w") as log, pytest.raises(ExceptionGroup) as refused:
            async with _client(params, log, mode=mode) as client:
                await client.list_tools()
        assert refused.group_contains(MCPError, match="Connection closed", depth=None)
    return errlog.read_text()


def _assert_refused(done: subprocess.CompletedProcess[str], cwd: Path, *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # nothing on stdout: the client reads only JSON-RPC there
    for text in expected:
        assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert list(cwd.iterdir()) == []  # no registry, no mlruns/, no .modelport/ in the client's directory


async def test_no_model_fails_at_start(cwd: Path, tmp_path: Path) -> None:
    done = _start(cwd)
    _assert_refused(done, cwd, "nothing to serve over stdio", "models:/NAME@ALIAS", "MODELPORT_MODELS", "--config")
    stderr = await _refused_by_the_sdk_client(_params(cwd), tmp_path / "stderr.txt")
    assert "nothing to serve over stdio" in stderr
    assert list(cwd.iterdir()) == []


async def test_missing_default_registry_fails_without_creating_one(cwd: Path, tmp_path: Path) -> None:
    done = _start(cwd, "models:/churn@champion")
    registry = f"sqlite:///{cwd.resolve()}/.modelport/mlflow.db"
    _assert_refused(done, cwd, f"registry not found: {registry}", "--registry-uri", "--state-dir", "absolute")
    stderr = await _refused_by_the_sdk_client(_params(cwd, "models:/churn@champion"), tmp_path / "stderr.txt")
    assert "registry not found" in stderr
    assert list(cwd.iterdir()) == []


def test_missing_registry_uri_or_state_dir_fails_without_creating_one(cwd: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    done = _start(cwd, "--registry-uri", f"sqlite:///{gone}/mlflow.db", "models:/churn@champion")
    _assert_refused(done, cwd, f"registry not found: sqlite:///{gone}/mlflow.db")
    done = _start(cwd, "--state-dir", str(gone), "models:/churn@champion")
    _assert_refused(done, cwd, f"registry not found: sqlite:///{gone}/mlflow.db", "modelport demo --no-serve")
    assert not gone.exists()


@pytest.fixture
def broken_registry(tmp_path: Path) -> Path:
    """A registry with one registered version whose artifacts are gone."""
    state = tmp_path / "broken-state"
    state.mkdir()
    uri = f"sqlite:///{state}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("broken")
    client.create_model_version("broken", source=str(tmp_path / "deleted-artifacts"))
    return state


async def test_every_model_failing_fails_at_start_with_each_reason(
    cwd: Path, tmp_path: Path, broken_registry: Path
) -> None:
    args = ("--state-dir", str(broken_registry), "models:/broken/1", "models:/no_such_model/1")
    done = _start(cwd, *args)
    _assert_refused(
        done,
        cwd,
        "no model could be loaded, so there is nothing to serve over stdio",
        "  - models:/broken/1: ",
        "  - models:/no_such_model/1: registered model 'no_such_model' does not exist",
        f"modelport models --state-dir {broken_registry}",
    )
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("  - models:/broken/1: "))
    assert len(line) <= len("  - models:/broken/1: ") + 200  # reasons are shortened, one line each
    stderr = await _refused_by_the_sdk_client(_params(cwd, *args), tmp_path / "stderr.txt")
    assert "models:/no_such_model/1" in stderr


def test_models_still_loading_at_the_deadline_count_as_failed(
    cwd: Path, tmp_path: Path, demo_registry: DemoRegistry
) -> None:
    state = tmp_path / "state"  # its own conversion cache: the process ends while the model may still convert
    args = ("--registry-uri", demo_registry.tracking_uri, "--state-dir", str(state), "--load-timeout", "0.001")
    done = _start(cwd, *args, "models:/sales_forecast@champion")
    _assert_refused(done, cwd, "  - models:/sales_forecast@champion: not loaded within 0.001 s (--load-timeout)")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_partial_failure_serves_the_rest_and_publishes_the_failures(
    cwd: Path, tmp_path: Path, demo_registry: DemoRegistry, mode: str
) -> None:
    params = _params(
        cwd, "--state-dir", str(demo_registry.state_dir), "models:/sales_forecast@champion", "models:/no_such_model/1"
    )
    with (tmp_path / "stderr.txt").open("w") as log:
        async with _client(params, log, mode) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["sales_forecast"]
            instructions = client.instructions or ""
            assert "Each tool scores rows" in instructions
            assert "failed to load" in instructions and "models:/no_such_model/1" in instructions
            assert "registered model 'no_such_model' does not exist" in instructions and STATUS in instructions

            listed = [str(r.uri) for r in (await client.list_resources()).resources]
            assert STATUS in listed and "modelport://models/sales_forecast/champion" in listed
            read = await client.read_resource(STATUS)
            content = read.contents[0]
            assert isinstance(content, types.TextResourceContents) and content.mime_type == "application/json"
            status = json.loads(content.text)
            assert [m["model_uri"] for m in status["served"]] == ["models:/sales_forecast@champion"]
            assert status["failed"] == [
                {
                    "deployment": "no_such_model/1",
                    "model_uri": "models:/no_such_model/1",
                    "name": "no_such_model",
                    "reason": "registered model 'no_such_model' does not exist",
                }
            ]
            with pytest.raises(MCPError):  # still no tool for it
                await client.call_tool("no_such_model", {"inputs": [{}]})
    assert "serving 1 of 2 models" in (tmp_path / "stderr.txt").read_text()
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_failures_are_published_live_on_every_transport(door: McpDoor, mode: str) -> None:
    """The same ``ToolServer`` answers ``/mcp``: instructions and the status resource follow the failures."""
    async with Client(door.server, mode=mode) as client:
        assert "failed to load" not in (client.instructions or "")
        assert STATUS not in [str(r.uri) for r in (await client.list_resources()).resources]
        assert json.loads(_text(await client.read_resource(STATUS)))["failed"] == []
    reasons = {f"m{i}/1": f"reason {i} " + "x" * 300 for i in range(7)}
    for key, reason in reasons.items():
        door.service.table.mark_failed(key, reason)
    door.service.table.mark_failed("customer_ltv@champion", "a failed swap: the old version still serves")
    async with Client(door.server, mode=mode) as client:
        note = (client.instructions or "").split("Each tool scores rows")[-1]
        assert "models:/m0/1 (reason 0 xxx" in note and "models:/m4/1" in note and "and 2 more" in note
        assert "models:/m5/1" not in note and "customer_ltv" not in note
        assert len(note) < 1500  # capped: five short sentences
        assert STATUS in [str(r.uri) for r in (await client.list_resources()).resources]
        failed = json.loads(_text(await client.read_resource(STATUS)))["failed"]
        assert [f["model_uri"] for f in failed] == [f"models:/{key}" for key in reasons]
        assert failed[0]["reason"] == reasons["m0/1"]  # in full


def _text(result: types.ReadResourceResult) -> str:
    content = result.contents[0]
    assert isinstance(content, types.TextResourceContents)
    return content.text


async def test_the_status_shows_each_caller_only_the_models_it_may_view(service: InferenceService) -> None:
    service.table.mark_failed("secret_model/2", "no such version")
    service.table.mark_failed("open_model@champion", "conversion failed")
    visible = {"open_model", "customer_ltv"}
    status = json.loads(_text(read_status(service, lambda name: name in visible)))
    assert [f["deployment"] for f in status["failed"]] == ["open_model@champion"]
    assert [s["name"] for s in status["served"]] == ["customer_ltv"]
    assert failure_note({}) is None
