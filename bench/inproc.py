"""In-process figures (no HTTP): decode-only, ORT-only, decode + ORT, and the full service path, per request size.

They are the "physical limit" the HTTP figures are compared with: what one core does with the same body when no
socket, no ASGI and no framework is involved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.payloads import arrow_stream, dataframe_split, sales_columns


@dataclass(frozen=True, slots=True)
class Stage:
    """Median microseconds per call of one stage at one request size."""

    stage: str
    rows: int
    us: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.us * 1e6 if self.us else 0.0


def _median_us(fn: Callable[[], Any], seconds: float) -> float:
    fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1e6


async def _median_us_async(fn: Callable[[], Awaitable[Any]], seconds: float) -> float:
    await fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def measure(state_dir: Path, model: str, sizes: tuple[int, ...], seconds: float = 0.5) -> list[Stage]:
    """Load ``model`` from the demo registry in ``state_dir`` in-process and time each stage."""
    from server.main import build
    from server.settings import Settings

    settings = Settings(state_dir=state_dir, models=(model,), log_level="WARNING")
    components = build(settings, mcp=False)
    out: list[Stage] = []

    async def run() -> None:
        await components.manager.deploy_all(settings.all_deployments())
        try:
            (dep,) = components.table.all()
            service = components.service
            name, version = dep.model.name, dep.model.version
            for n in sizes:
                cols = sales_columns(n)
                body, arrow = dataframe_split(cols), arrow_stream(cols)
                decoded = dep.decoder.decode_json(body)
                feeds = dep.to_feeds(decoded.columns, decoded.rows)

                def decode_ort(body: bytes = body) -> Any:
                    d = dep.decoder.decode_json(body)
                    return dep.session.run(dep.to_feeds(d.columns, d.rows))

                async def full(body: bytes = body, ctype: str = "application/json") -> bytes:
                    return (await service.predict_body(name, version, body, ctype)).mlflow_json()

                out.append(Stage("decode JSON", n, _median_us(lambda b=body: dep.decoder.decode_json(b), seconds)))
                out.append(Stage("ORT run", n, _median_us(lambda f=feeds: dep.session.run(f), seconds)))
                out.append(Stage("decode JSON + ORT", n, _median_us(decode_ort, seconds)))
                out.append(Stage("service JSON (+batcher, encode)", n, await _median_us_async(full, seconds)))

                async def arrow_path(data: bytes = arrow) -> bytes:
                    return (await service.predict_arrow(name, version, data)).mlflow_json()

                out.append(Stage("service Arrow (+batcher, encode)", n, await _median_us_async(arrow_path, seconds)))
        finally:
            await components.manager.stop_all()

    asyncio.run(run())
    return out
