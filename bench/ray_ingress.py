"""Ray Serve ingress options against ``modelport serve``, side by side in one run (docs/scaling.md)::

    python -m bench.ray_ingress [--seconds 3] [--rounds 3] [--connections 64]   # re-runs itself in `unshare -n`

Every side serves the demo ``sales_forecast`` model through the same ``server.main.build`` app, 1-row JSON bodies:

- ``modelport``: ``modelport serve`` (one process, the reference).
- ``serve-proxy``: Serve's HTTP proxy → a plain deployment (no FastAPI) whose ``__call__`` hands the request to the
  modelport app in the replica (our batcher does the batching ``@serve.batch`` would).
- ``haproxy`` (``--haproxy``): the same deployment behind Ray's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``).
- ``handles``: a uvicorn ingress in the driver calling the replicas through a ``DeploymentHandle``
  (``server.scaleout.wake.WakeApp``, what the driver uses while scaling from zero).
- ``workers-2`` (``--sides``): ``modelport serve --workers 2``, two processes sharing the port, no Ray.
- ``front-1`` / ``front-2``: ``modelport serve --ray`` (``ingress: front``, the default): 1 or 2 Serve replicas,
  each serving modelport's own HTTP app on a port of its own, behind the driver's HAProxy front (retries, routes).
- ``reuseport-1`` / ``reuseport-2``: ``ingress: direct``: the replicas share one port with ``SO_REUSEPORT``, nothing
  in between.

The sides run at once (Ray logically over-committed: CPUs are shared anyway) and short wrk runs alternate between
them; medians are printed, then ratios to ``modelport``. Server CPU for the Ray sides is the whole cluster's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.netns import reexec_in_netns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sides", default="modelport,serve-proxy,handles,front-1,front-2,reuseport-1,reuseport-2")
    parser.add_argument("--haproxy", action="store_true", help="also Ray's HAProxy ingress (replaces serve-proxy)")
    parser.add_argument("--state-dir", type=Path)
    args = parser.parse_args(argv)
    if args.haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    reexec_in_netns()
    return run(args)


def run(args: argparse.Namespace) -> int:
    from bench.load import Result, run_wrk
    from bench.payloads import write_bodies
    from bench.servers import free_port, modelport
    from bench.suite import MODEL, SCORING, prepare_state

    work = Path(tempfile.mkdtemp(prefix="modelport-ray-"))
    state = args.state_dir or work / "state"
    prepare_state(state)
    body = write_bodies(work / "bodies", (1,))[("json", 1)]
    wanted = args.sides.split(",")
    sides: dict[str, tuple[str, int]] = {}  # name -> (url, pid for CPU)
    started: dict[str, float] = {}
    baseline = None
    if "modelport" in wanted:
        baseline = modelport(state, MODEL, free_port(), log=work / "modelport.log")
        started["modelport"] = baseline.start()
        sides["modelport"] = (baseline.url, baseline.pid)
    workers = None
    if "workers-2" in wanted:  # `modelport serve --workers 2`: two processes on the port, no Ray
        workers = modelport(state, MODEL, free_port(), log=work / "workers.log")
        workers.argv += ["--workers", "2"]
        workers.name = "workers-2"
        started["workers-2"] = workers.start()
        sides["workers-2"] = (workers.url, workers.pid)
    cluster = _Cluster(state, work, args.haproxy)
    try:
        for name in wanted:
            if name in ("modelport", "workers-2"):
                continue
            t0 = time.perf_counter()
            url = cluster.add(name)
            started[name] = time.perf_counter() - t0
            sides[name] = (url, os.getpid())
        path = SCORING["modelport"]
        results: dict[str, list[Result]] = {name: [] for name in sides}
        for name, (url, pid) in sides.items():
            run_wrk(url + path, body.path, server=name, case="warm", rows=1, connections=8, seconds=1.0, pid=pid)
        for i in range(args.rounds):
            order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
            for name, (url, pid) in order:
                try:
                    r = run_wrk(url + path, body.path, server=name, case="json", rows=1,
                                connections=args.connections, seconds=args.seconds, pid=pid)  # fmt: skip
                except RuntimeError as exc:
                    print(f"{name}: {exc}", flush=True)
                    continue
                results[name].append(r)
                print(f"round {i + 1} {name}: {r.rps:,.0f} req/s p99 {r.p99_ms:.1f} ms errors {r.errors}", flush=True)
        print(f"\n1 row, {args.connections} connections, {args.rounds} x {args.seconds:g} s, medians; load1 "
              f"{os.getloadavg()[0]:.2f}")  # fmt: skip
        print("| ingress | req/s | vs modelport serve | p50 ms | p99 ms | CPU ms/req | errors | ready in s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        base = statistics.median(r.rps for r in results.get("modelport", [])) if results.get("modelport") else 0.0
        for name, runs in results.items():
            if not runs:
                print(f"| {name} | failed | | | | | | |")
                continue
            rps = statistics.median(r.rps for r in runs)
            ratio = f"{rps / base:.0%}" if base else "-"
            print(
                f"| {name} | {rps:,.0f} | {ratio} | {statistics.median(r.p50_ms for r in runs):.2f} | "
                f"{statistics.median(r.p99_ms for r in runs):.2f} | "
                f"{statistics.median(r.cpu_ms_per_request for r in runs):.3f} | {sum(r.errors for r in runs)} | "
                f"{started.get(name, 0):.1f} |"
            )
        print(f"memory (RSS, MiB): {cluster.memory()}")
    finally:
        cluster.close()
        for server in (baseline, workers):
            if server is not None:
                server.stop()
    return 0


class _Cluster:
    """One local Ray with Serve; each side is one application."""

    def __init__(self, state: Path, work: Path, haproxy: bool) -> None:
        import ray
        from ray import serve

        from bench.servers import free_port
        from bench.suite import MODEL
        from server.settings import load_settings

        self.proxy_port = free_port()
        ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": self.proxy_port})
        self.settings = load_settings(
            None, state_dir=state, models=(MODEL,), log_format="json", log_level="INFO", port=free_port()
        )
        self.haproxy = haproxy
        self._threads: list[Any] = []
        self._drivers: list[Any] = []

    def add(self, name: str) -> str:
        import ray
        from ray import serve

        from bench.servers import free_port
        from server.scaleout import ray_serve
        from server.scaleout.keeper import Keeper

        if name in ("serve-proxy", "handles"):
            handle = serve.run(_proxied(self.settings), name=name, route_prefix=f"/{name}")
            if name == "serve-proxy":
                return f"http://127.0.0.1:{self.proxy_port}/{name}"
            return self._handle_ingress(handle, free_port())
        kind, n = name.rsplit("-", 1)
        scaleout = self.settings.scaleout.model_copy(
            update={"min_replicas": int(n), "max_replicas": int(n), "ingress": "front" if kind == "front" else "direct"}
        )
        settings = self.settings.model_copy(update={"port": free_port(), "scaleout": scaleout})
        cluster = ray_serve.deploy(settings, name=name)
        stop = asyncio.Event()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=lambda: loop.run_until_complete(Keeper(cluster).run(stop)), daemon=True)
        thread.start()
        self._drivers.append((loop, stop, thread))
        url = f"http://127.0.0.1:{settings.port}"
        deadline = time.monotonic() + 120
        while not _answers(url + "/ping") or len(ray.get(cluster.directory.members.remote())) < int(n):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.1)
        return url

    def _handle_ingress(self, handle: Any, port: int) -> str:
        """A uvicorn server in a driver thread forwarding every request through ``handle.forward``."""
        import uvicorn

        from server.scaleout.replica import QuietServer
        from server.scaleout.wake import WakeApp

        async def forward(_deployment: str | None, method: str, path: str, headers: Any, body: bytes) -> Any:
            return await handle.forward.remote(method, path, headers, body)

        app = WakeApp(forward, 30.0)
        server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))

        async def keepalive_app(scope: Any, receive: Any, send: Any) -> None:  # WakeApp closes every connection
            async def send_keep(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [h for h in message["headers"] if h[0] != b"connection"]}
                await send(message)

            await app(scope, receive, send_keep)

        server.config.app = keepalive_app
        thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        thread.start()
        while not server.started:
            thread.join(0.05)
        self._threads.append(server)
        return f"http://127.0.0.1:{port}"

    def memory(self) -> str:
        from bench.servers import process_tree

        total = 0
        for pid in process_tree(os.getpid()):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            rss = next((ln for ln in status.splitlines() if ln.startswith("VmRSS:")), None)
            total += int(rss.split()[1]) if rss else 0
        return f"bench driver + Ray cluster + every replica + modelport serve {total / 1024:,.0f}"

    def close(self) -> None:
        import ray
        from ray import serve

        for server in self._threads:
            server.should_exit = True
        for loop, stop, thread in self._drivers:
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
        serve.shutdown()
        ray.shutdown()


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _proxied(settings: Any) -> Any:
    """A plain Serve deployment answering through the modelport app of its replica (the Serve-proxy side)."""
    from ray import serve
    from starlette.responses import Response

    from server.scaleout.replica import ReplicaServer

    @serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 1})
    class Proxied:
        def __init__(self, settings: Any) -> None:
            # its own port, never driven: requests come through Serve (this side) or handles
            self.server = ReplicaServer(settings.model_copy(update={"port": 0}))
            self.server.start()

        async def __call__(self, request: Any) -> Any:
            path = request.scope["path"]
            if path.startswith("/serve-proxy/"):
                path = path[len("/serve-proxy") :]
            status, headers, body = await self.server.call(
                request.method, path, list(request.headers.raw), await request.body()
            )
            return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

        async def forward(self, method: str, path: str, headers: Any, body: bytes) -> Any:
            return await self.server.call(method, path, headers, body)

    return Proxied.bind(settings)


if __name__ == "__main__":
    raise SystemExit(main())
