"""The Python HTTP floor: a bare ASGI app under the same uvicorn (uvloop + httptools) as modelport.

It reads the whole body, parses it with orjson and answers ``{"predictions": [0.0, ...]}`` with one value per row of a
``dataframe_split`` body: JSON in and JSON out, no framework, no model. Run: ``uvicorn bench.echo_app:app``.
"""

from __future__ import annotations

from typing import Any

import orjson

_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI entry point: ``GET`` anything answers ``{}`` (readiness), ``POST`` anything is scored as above."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    out = b"{}"
    if body:
        payload = orjson.loads(body)
        rows = len(payload.get("dataframe_split", {}).get("data", ())) if isinstance(payload, dict) else 0
        out = orjson.dumps({"predictions": [0.0] * rows})
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": out})
