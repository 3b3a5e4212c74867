"""Promotion end to end over real HTTP: the alias moves in the registry while hundreds of requests are in flight,
a signed webhook (or the poller) triggers the hot swap, and not one request fails. MLflow's own webhook delivery code
(what ``mlflow server`` runs after an alias is set) drives it too, and a wrong secret is refused."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.entities.webhook import Webhook, WebhookEvent, WebhookStatus
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.webhooks import delivery

from server.lifecycle.webhooks import sign
from tests.lifecycle import Live, ScorerRegistry, answer, live

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "lifecycle-secret"
CONCURRENCY = 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def swap_server(scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, str]]:
    """``<name>@champion`` served, webhooks on, poller off: only a webhook can trigger a swap here."""
    name = scorers.register("swap", [1, 2, 3])
    settings = scorers.settings(
        tmp_path_factory.mktemp("swap"),
        models=(f"models:/{name}@champion",),
        promotion={"poll_interval_s": 0, "webhook_secret": SECRET},
    )
    with live(settings) as server:
        yield server, name


def _changed(server: Live) -> threading.Event:
    """Set when the deployment table changes (a swap), from the server's thread."""
    event = threading.Event()
    server.components.service.subscribe(event.set)
    return event


def _signed(name: str, version: str, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": name, "alias": "champion", "version": version},
        }
    ).encode()
    delivery_id, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(secret, delivery_id, stamp, body),
    }
    return body, headers


async def test_swap_under_load_fails_no_request(
    swap_server: tuple[Live, str], scorers: ScorerRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    server, name = swap_server
    path = f"/model/{name}/champion/invocations"
    stop, warm, switched = asyncio.Event(), asyncio.Event(), asyncio.Event()
    results: list[tuple[int, int, float | None, float, float]] = []  # (worker, status, factor, sent, answered)
    after_switch = 0
    swapped_at: list[float] = []
    server.components.service.subscribe(lambda: swapped_at.append(time.monotonic()))

    async with httpx.AsyncClient(
        base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)
    ) as client:

        async def worker(i: int) -> None:
            nonlocal after_switch
            while not stop.is_set():
                sent = time.monotonic()
                r = await client.post(path, json=answer())
                factor = r.json()["predictions"][0] / 2 if r.status_code == 200 else None
                results.append((i, r.status_code, factor, sent, time.monotonic()))
                if len(results) >= CONCURRENCY:
                    warm.set()
                if factor == 2.0:
                    switched.set()
                    after_switch += 1
                    if after_switch >= CONCURRENCY:
                        stop.set()

        workers = [asyncio.create_task(worker(i)) for i in range(CONCURRENCY)]
        await asyncio.wait_for(warm.wait(), 60)
        await asyncio.to_thread(scorers.move, name, "champion", "2")
        body, headers = _signed(name, "2")
        triggered = time.monotonic()
        hook = await client.post("/webhooks/mlflow", content=body, headers=headers)
        assert hook.status_code == 200 and hook.json()["status"] == "accepted"
        await asyncio.wait_for(switched.wait(), 60)
        first_v2 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*workers), 60)

    statuses = [r[1] for r in results]
    assert statuses.count(200) == len(results), {s: statuses.count(s) for s in set(statuses)}
    for i in range(CONCURRENCY):  # each client sees version 1 answers, then version 2 answers, never back
        seen = [r[2] for r in results if r[0] == i]
        assert seen == sorted(seen) and set(seen) <= {1.0, 2.0}
    (swap,) = swapped_at
    in_flight_at_swap = sum(1 for r in results if r[3] < swap < r[4])
    assert in_flight_at_swap >= CONCURRENCY // 2  # hundreds of requests were on their way when the table changed
    info = server.components.service.describe(name, "champion")
    assert info.version == "2" and info.lifecycle.previous_version == "1"
    with capsys.disabled():
        print(
            f"\n[hot swap under load] {len(results)} requests, {CONCURRENCY} concurrent, 0 failed; "
            f"{in_flight_at_swap} in flight at the swap; swap {(swap - triggered) * 1000:.0f} ms and first v2 answer "
            f"{(first_v2 - triggered) * 1000:.0f} ms after the webhook (load+convert+parity+warm-up of v2 under this "
            f"load: {info.load_seconds * 1000:.0f} ms)"
        )


async def test_bad_webhook_signatures_change_nothing(swap_server: tuple[Live, str]) -> None:
    server, name = swap_server
    version = server.components.service.describe(name, "champion").version
    body, headers = _signed(name, "3", secret="not-the-secret")
    async with httpx.AsyncClient(base_url=server.url) as client:
        bad = await client.post("/webhooks/mlflow", content=body, headers=headers)
        unsigned = await client.post("/webhooks/mlflow", content=body, headers={"Content-Type": "application/json"})
    assert bad.status_code == 401 and bad.json()["error_code"] == "UNAUTHENTICATED"
    assert unsigned.status_code == 401
    assert server.components.service.describe(name, "champion").version == version


@pytest.fixture
def mlflow_webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let MLflow deliver to http://127.0.0.1, with a fresh webhook cache before and after."""
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    if delivery._webhook_cache is not None:  # MLflow caches webhook lists per event for 60 s, process-wide
        delivery._webhook_cache.clear()
    yield
    if delivery._webhook_cache is not None:
        delivery._webhook_cache.clear()


async def test_mlflow_webhook_delivery_swaps_at_once(
    swap_server: tuple[Live, str], scorers: ScorerRegistry, mlflow_webhooks: None
) -> None:
    server, name = swap_server
    url = f"{server.url}/webhooks/mlflow"
    events = [WebhookEvent("model_version_alias", "created"), WebhookEvent("model_version_alias", "deleted")]
    hook = scorers.client.create_webhook(name="modelport", url=url, events=events, secret=SECRET)
    try:
        good = Webhook(hook.webhook_id, "modelport", url, events, 0, 0, status=WebhookStatus.ACTIVE, secret=SECRET)
        wrong = Webhook(hook.webhook_id, "modelport", url, events, 0, 0, status=WebhookStatus.ACTIVE, secret="nope")
        assert (await asyncio.to_thread(delivery.test_webhook, good)).response_status == 200
        assert (await asyncio.to_thread(delivery.test_webhook, wrong)).response_status == 401

        changed = _changed(server)
        await asyncio.to_thread(scorers.move, name, "champion", "3")
        # What the MLflow tracking server does after POST /api/2.0/mlflow/registered-models/alias:
        payload = {"name": name, "alias": "champion", "version": "3"}
        delivery.deliver_webhook(event=events[0], payload=payload, store=SqlAlchemyStore(scorers.uri))  # type: ignore[arg-type]
        assert await asyncio.to_thread(changed.wait, 30)
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.post(f"/model/{name}/champion/invocations", json=answer())
        assert r.json() == {"predictions": [6.0]}
    finally:
        scorers.client.delete_webhook(hook.webhook_id)


async def test_the_poller_follows_the_alias(scorers: ScorerRegistry, tmp_path: Path) -> None:
    name = scorers.register("polled", [1, 2])
    settings = scorers.settings(tmp_path, models=(f"models:/{name}@champion",), promotion={"poll_interval_s": 0.2})
    with live(settings) as server:
        changed = _changed(server)
        await asyncio.to_thread(scorers.move, name, "champion", "2")
        assert await asyncio.to_thread(changed.wait, 30)
        with server.client() as c:
            assert c.post(f"/model/{name}/champion/invocations", json=answer()).json() == {"predictions": [4.0]}
            listing: Any = c.get(f"/models/{name}/champion").json()
        assert listing["version"] == "2" and listing["lifecycle"]["previous_version"] == "1"
