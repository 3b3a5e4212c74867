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
from server.scaleout.feed import merge_feeds
from server.scaleout.metrics import CONTENT_TYPE, merge
from server.scaleout.wake import WakeApp

FEED = "/dashboard/feed.json"
"""The dashboard's feed: merged across replicas (``server.scaleout.feed``)."""
EXPORT = re.compile(r"^/api/2\.0/serving-endpoints/[^/]+/metrics$")
"""Databricks' metrics export of one endpoint: merged across replicas like ``/metrics``."""
PASSED = (b"authorization", b"cookie")
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
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
        merged = path == "/metrics" or path == FEED or EXPORT.match(path)
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and merged:
            query = scope.get("query_string", b"").decode()
            passed = [(k, v) for k, v in scope["headers"] if k in PASSED]
            target = path + (f"?{query}" if query else "")
            status, headers, body = await (self.feed(passed, target) if path == FEED else self.metrics(passed, target))
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

    async def _gather(
        self, members: list[Member], headers: list[tuple[bytes, bytes]], target: str
    ) -> tuple[dict[str, bytes], list[str], Answer | None]:
        """Each replica's answer to ``target``: the 200 bodies by address, the addresses that did not answer, and
        an answer to give as is: a refusal of the caller (401/403), or a 4xx every answering replica gave (404: no
        replica has that endpoint)."""
        passed = {k.decode(): v.decode() for k, v in headers}
        answers = await asyncio.gather(
            *(self.client.get(f"http://{m.address}{target}", headers=passed) for m in members), return_exceptions=True
        )
        bodies: dict[str, bytes] = {}
        missing: list[str] = []
        refused: httpx.Response | None = None
        for member, answer in zip(members, answers, strict=True):
            if isinstance(answer, BaseException) or answer.status_code >= 500:
                missing.append(member.address)
            elif answer.status_code in (401, 403):
                return {}, [], (answer.status_code, _headers(answer), answer.content)
            elif answer.status_code != 200:
                refused = answer  # e.g. a replica of another unit, without this endpoint
            else:
                bodies[member.address] = answer.content
        if not bodies and refused is not None and not missing:
            return {}, [], (refused.status_code, _headers(refused), refused.content)
        if not bodies:
            body = orjson.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "no replica answered; retry"})
            return {}, missing, (503, [(b"content-type", b"application/json"), (b"retry-after", b"1")], body)
        return bodies, missing, None

    async def metrics(self, headers: list[tuple[bytes, bytes]], target: str = "/metrics") -> Answer:
        """Every live replica's ``/metrics`` (or an endpoint's export), merged (``server.scaleout.metrics``)."""
        members = self.members()
        bodies, missing, as_is = await self._gather(members, headers, target)
        if as_is is not None:
            return as_is
        try:
            text = merge({address: body.decode() for address, body in bodies.items()})
        except (ValueError, UnicodeDecodeError) as exc:
            return 502, [(b"content-type", b"application/json")], _bad_gateway(exc)
        if target.split("?", 1)[0] != "/metrics":
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

    async def feed(self, headers: list[tuple[bytes, bytes]], target: str) -> Answer:
        """Every live replica's dashboard feed, merged (``server.scaleout.feed``)."""
        bodies, _, as_is = await self._gather(self.members(), headers, target)
        if as_is is not None:
            return as_is
        try:
            merged = merge_feeds({address: orjson.loads(body) for address, body in bodies.items()})
        except (ValueError, KeyError, TypeError) as exc:
            return 502, [(b"content-type", b"application/json")], _bad_gateway(exc)
        body = orjson.dumps(merged, option=orjson.OPT_NON_STR_KEYS)
        return 200, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], body

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


def _bad_gateway(exc: Exception) -> bytes:
    return orjson.dumps({"error_code": "BAD_GATEWAY", "message": str(exc)[:500]})
