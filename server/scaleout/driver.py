"""The driver's private HTTP app behind the front (no Ray import): ``/metrics`` for every replica, and wake-ups.

The front (HAProxy) sends ``GET /metrics`` and the Databricks metrics export (``GET
/api/2.0/serving-endpoints/<name>/metrics``) here, and uses this app as each backend's ``backup`` server: it receives
a request only when its deployment has no replica up (scaled to zero, or every replica lost), and forwards it whole
through a Serve handle (``server.scaleout.wake.WakeApp``), which starts one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from server.scaleout.directory import Member
from server.scaleout.metrics import CONTENT_TYPE, merge
from server.scaleout.wake import WakeApp

EXPORT = re.compile(r"^/api/2\.0/serving-endpoints/[^/]+/metrics$")
"""Databricks' metrics export of one endpoint: merged across replicas like ``/metrics``."""
PASSED = (b"authorization", b"cookie")
"""Request headers passed on to each replica's ``/metrics`` (it checks the caller itself)."""


FRONT_COUNTERS = {
    "requests": "Requests the front sent to a backend.",
    "retries": "Requests the front sent again after a replica failed to answer (connection refused or closed).",
    "redispatches": "Requests the front moved to another replica after theirs failed.",
    "errors": "Requests no replica could answer (the front answered 5xx).",
}


class DriverApp:
    """ASGI app: ``GET /metrics`` merges the live replicas' metrics (label ``replica``); the rest wakes a replica.

    Args:
        wake: forwards a request to a replica of the deployment the front named.
        members: the live replicas now.
        timeout_s: how long one replica's ``/metrics`` may take.
    """

    def __init__(
        self, wake: WakeApp, members: Callable[[], list[Member]], *, timeout_s: float = 5.0,
        front_stats: Callable[[], dict[str, dict[str, float]]] | None = None,
    ) -> None:  # fmt: skip
        self.wake = wake
        self.members = members
        self.front_stats = front_stats
        self.client = httpx.AsyncClient(timeout=timeout_s)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        merged = path == "/metrics" or EXPORT.match(path)
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and merged:
            query = scope.get("query_string", b"").decode()
            passed = [(k, v) for k, v in scope["headers"] if k in PASSED]
            status, headers, body = await self.metrics(passed, path + (f"?{query}" if query else ""))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
            return
        if scope["type"] == "lifespan":
            try:
                await self.wake(scope, receive, send)
            finally:
                await self.client.aclose()
            return
        await self.wake(scope, receive, send)

    async def metrics(
        self, headers: list[tuple[bytes, bytes]], path: str = "/metrics"
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Every live replica's answer to ``path`` (``/metrics`` or an endpoint's export), merged; a refusal
        (401/403) of the caller is answered as is, and so is a 404 when no replica has the endpoint."""
        members = self.members()
        passed = {k.decode(): v.decode() for k, v in headers}
        answers = await asyncio.gather(
            *(self.client.get(f"http://{m.address}{path}", headers=passed) for m in members), return_exceptions=True
        )
        texts: dict[str, str] = {}
        missing: list[str] = []
        not_found: httpx.Response | None = None
        for member, answer in zip(members, answers, strict=True):
            if isinstance(answer, BaseException) or answer.status_code != 200:
                if isinstance(answer, httpx.Response) and answer.status_code in (401, 403):
                    return answer.status_code, _headers(answer), answer.content
                if isinstance(answer, httpx.Response) and answer.status_code == 404:
                    not_found = answer  # a replica without this endpoint (another unit's)
                    continue
                missing.append(member.address)
                continue
            texts[member.address] = answer.text
        if not texts and not_found is not None and not missing:
            return 404, _headers(not_found), not_found.content
        if not texts:
            body = orjson.dumps(
                {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "no replica answered /metrics; retry"}
            )
            return 503, [(b"content-type", b"application/json"), (b"retry-after", b"1")], body
        try:
            text = merge(texts)
        except ValueError as exc:
            body = orjson.dumps({"error_code": "BAD_GATEWAY", "message": str(exc)[:500]})
            return 502, [(b"content-type", b"application/json")], body
        if path != "/metrics":
            return 200, [(b"content-type", CONTENT_TYPE.encode())], text.encode()
        deployments: dict[str, int] = {}
        for member in members:
            deployments[member.deployment] = deployments.get(member.deployment, 0) + 1
        text += "# HELP modelport_replicas Replicas registered with the front, by Serve deployment.\n"
        text += "# TYPE modelport_replicas gauge\n"
        text += "".join(f'modelport_replicas{{deployment="{d}"}} {n}\n' for d, n in sorted(deployments.items()))
        text += await self.front_text()
        if missing:
            text += "".join(f"# replica {address} did not answer\n" for address in missing)
        return 200, [(b"content-type", CONTENT_TYPE.encode())], text.encode()

    async def front_text(self) -> str:
        """The front's own counters per backend (HAProxy's stats), as Prometheus counters."""
        if self.front_stats is None:
            return ""
        try:
            stats = await asyncio.to_thread(self.front_stats)
        except OSError:  # the front is restarting
            return ""
        text = ""
        for key, help_text in FRONT_COUNTERS.items():
            text += f"# HELP modelport_front_{key}_total {help_text}\n# TYPE modelport_front_{key}_total counter\n"
            text += "".join(
                f'modelport_front_{key}_total{{backend="{backend}"}} {values[key]}\n'
                for backend, values in sorted(stats.items())
            )
        return text


def _headers(answer: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in answer.headers.items() if k != "content-length"]
