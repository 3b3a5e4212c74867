"""tools/list for a large registry, per tool mode: ``python -m bench.mcp_catalog [--models 500] [--calls 50]``.

What is served: the four demo models (registered in a sqlite MLflow registry, converted to ONNX and loaded by the
real ``ModelLoader``; the conversion cache makes reruns fast), each served under ``--models / 4`` registered-model
names with their own description and tags (``<demo>_<region>_<n>``, alias ``champion``). Each name is a separate
deployment with its own batcher, sharing the demo model's ONNX session: ``tools/list`` depends only on the
deployment table, not on how the models got there, and registering and converting 500 models would only measure
MLflow and skl2onnx.

For each mode (``per_model`` with the default page of 100, ``per_model`` on one page, ``catalog``, ``both``) a real
uvicorn server on 127.0.0.1 serves the door; the real SDK client (``mcp.Client``) lists every page ``--calls``
times in each protocol era. Printed: pages, bytes of the JSON results (all pages, and the largest page), median and
p99 latency of a full listing and of one page, and in catalogue mode the latency of ``search_models`` and
``predict``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from mcp import Client

from registry import ModelRef
from registry.client import RegistryClient
from registry.demo import ensure_demo_models
from server.deployments import Deployment, DeploymentTable
from server.lifecycle.loader import ModelLoader
from server.runtime.batcher import Batcher, BatcherConfig
from server.service import InferenceService
from server.settings import DeploymentSpec, Settings
from tools import McpDoor

REGIONS = ("emea", "apac", "amer", "latam", "nordics")
TEAMS = ("growth", "finance", "risk", "supply")
MODES: tuple[tuple[str, str, int], ...] = (
    ("per_model, pages of 100", "per_model", 100),
    ("per_model, one page", "per_model", 10_000),
    ("catalog", "catalog", 100),
    ("both, pages of 100", "both", 100),
)


def load_demo(state: Path) -> list[Deployment]:
    uri = f"sqlite:///{state}/mlflow.db"
    refs = ensure_demo_models(uri, state / "artifacts")
    settings = Settings(state_dir=state, registry_uri=uri)
    loader = ModelLoader(RegistryClient(uri, uri), settings)
    return [loader.build(DeploymentSpec(model=ref.uri)) for ref in refs]


def fan_out(demos: list[Deployment], n: int) -> list[Deployment]:
    """``n`` deployments: each demo model under ``n / len(demos)`` names, with their own description and tags."""
    out: list[Deployment] = []
    for i in range(n):
        base = demos[i % len(demos)]
        region, team = REGIONS[i % len(REGIONS)], TEAMS[(i // len(demos)) % len(TEAMS)]
        name = f"{base.ref.name}_{region}_{i:03d}"
        model = dataclasses.replace(
            base.model,
            name=name,
            model_description=f"{base.model.model_description} Fitted for the {region.upper()} region.",
            tags={**base.model.tags, "region": region, "team": team},
        )
        ref = ModelRef(name, alias="champion")
        batcher = Batcher(base.session.run, BatcherConfig(), name=ref.uri)
        out.append(dataclasses.replace(base, ref=ref, model=model, batcher=batcher))
    return out


@contextmanager
def serve(deployments: list[Deployment], settings: Settings) -> Iterator[str]:
    table = DeploymentTable()
    for dep in deployments:
        table.add(dep)
    service = InferenceService(table, max_tool_rows=settings.max_tool_rows)
    door = McpDoor(service, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for dep in table.all():
            await dep.batcher.start()
        async with door.lifespan():
            yield
        for dep in table.all():
            await dep.batcher.stop()

    app = FastAPI(lifespan=lifespan)
    door.install(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def list_all(client: Client) -> tuple[list[int], list[float], int]:
    """Bytes and seconds per page, and the number of tools."""
    sizes, times, tools = [], [], 0
    cursor: str | None = None
    while True:
        started = time.perf_counter()
        result = await client.list_tools(cursor=cursor, cache_mode="bypass")
        times.append(time.perf_counter() - started)
        sizes.append(len(json.dumps(result.model_dump(by_alias=True, mode="json", exclude_none=True))))
        tools += len(result.tools)
        cursor = result.next_cursor
        if cursor is None:
            return sizes, times, tools


async def measure(url: str, era: str, calls: int, catalog: bool) -> dict[str, Any]:
    async with Client(url, mode=era) as client:
        sizes, _, tools = await list_all(client)  # warm-up (builds and caches the tool specs)
        totals: list[float] = []
        pages: list[float] = []
        for _ in range(calls):
            _, times, _ = await list_all(client)
            totals.append(sum(times))
            pages += times
        row: dict[str, Any] = {
            "era": era,
            "tools": tools,
            "pages": len(sizes),
            "bytes": sum(sizes),
            "largest_page": max(sizes),
            "list_ms": ms(totals),
            "page_ms": ms(pages),
        }
        if catalog:
            searches, predicts = [], []
            found = await client.call_tool("search_models", {"query": "lifetime value", "tags": None, "limit": 5})
            call = await client.call_tool("describe_model", {"model": found.structured_content["models"][0]["model"]})
            example = call.structured_content["examplePredictCall"]
            for _ in range(calls):
                started = time.perf_counter()
                await client.call_tool("search_models", {"query": "probability of fraud", "tags": None, "limit": 5})
                searches.append(time.perf_counter() - started)
                started = time.perf_counter()
                result = await client.call_tool("predict", example)
                predicts.append(time.perf_counter() - started)
                assert not result.is_error, result
            row["search_ms"], row["predict_ms"] = ms(searches), ms(predicts)
        return row


def _era(mode: str) -> str:
    return "2025-11-25" if mode == "legacy" else "2026-07-28"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--state-dir", type=Path, default=None, help="demo registry (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = args.state_dir or Path(tmp)
        started = time.perf_counter()
        deployments = fan_out(load_demo(state), args.models)
        print(f"{len(deployments)} deployments ready in {time.perf_counter() - started:.1f} s")
        print("| mode | era | tools | pages | bytes, all pages | largest page | full list median / p99 ms "
              "| one page median / p99 ms | search_models ms | predict ms |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, mode, page_size in MODES:
            settings = Settings(mcp_tools=mode, mcp_page_size=page_size)  # type: ignore[arg-type]
            deps = [dataclasses.replace(d, batcher=Batcher(d.session.run, BatcherConfig())) for d in deployments]
            with serve(deps, settings) as url:
                for era in ("legacy", "auto"):
                    try:
                        r = asyncio.run(measure(url, era, args.calls, mode != "per_model"))
                    except Exception as exc:  # e.g. the SDK client's 1 MiB limit on one SSE event
                        cause: BaseException = exc
                        while isinstance(cause, BaseExceptionGroup):
                            cause = cause.exceptions[0]
                        print(f"| {label} | {_era(era)} | fails: {cause} |||||||", flush=True)
                        continue
                    extra = [f"{r[k][0]:.1f} / {r[k][1]:.1f}" if k in r else "-" for k in ("search_ms", "predict_ms")]
                    print(
                        f"| {label} | {_era(era)} | {r['tools']} "
                        f"| {r['pages']} | {r['bytes']:,} | {r['largest_page']:,} "
                        f"| {r['list_ms'][0]:.1f} / {r['list_ms'][1]:.1f} "
                        f"| {r['page_ms'][0]:.1f} / {r['page_ms'][1]:.1f} | {extra[0]} | {extra[1]} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
