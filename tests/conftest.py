"""Shared fixtures: the demo registry (real sqlite MLflow) and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from registry import ModelRef
from server.rest.protocol import SingleWriteProtocol


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class DemoRegistry:
    state_dir: Path
    tracking_uri: str
    refs: list[ModelRef]


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> DemoRegistry:
    """The four demo models registered (with alias champion) in a fresh sqlite registry."""
    from registry.demo import ensure_demo_models

    state = tmp_path_factory.mktemp("state")
    uri = f"sqlite:///{state}/mlflow.db"
    refs = ensure_demo_models(uri, state / "artifacts")
    return DemoRegistry(state, uri, refs)


@dataclass
class LiveServer:
    url: str
    components: object
    server: uvicorn.Server

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)  # type: ignore[arg-type]


def start_server(components: object, app: object) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Run uvicorn in a thread on a pre-bound 127.0.0.1 socket: requests queue until it serves (no polling)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(  # the protocol `modelport serve` uses
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=SingleWriteProtocol,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def live_server(demo_registry: DemoRegistry) -> Iterator[LiveServer]:
    """modelport serving every demo model @champion, over real HTTP."""
    from server.main import build
    from server.settings import Settings

    settings = Settings(
        state_dir=demo_registry.state_dir,
        registry_uri=demo_registry.tracking_uri,
        models=tuple(r.uri for r in demo_registry.refs),
        max_rows=5000,
        max_body_bytes=1024 * 1024,
    )
    components = build(settings)
    server, thread, url = start_server(components, components.app)
    live = LiveServer(url, components, server)
    with live.client() as client:
        assert client.get("/ping").status_code == 200  # blocks until the lifespan has loaded the models
    yield live
    server.should_exit = True
    thread.join(timeout=30)
