"""What ``modelport mcp --stdio`` checks before it serves: something to serve, a registry that exists, models loaded.

An MCP client starts the stdio server itself and shows the user only its exit status and stderr, so an empty server
(no tools, no error) is the worst outcome. These checks turn each way of ending up empty into one clear message:

- ``nothing_to_serve``: no model URI, no ``deployments`` in the config and no on-demand registry policy;
- ``registry_problem``: a local registry (sqlite file, file store) that does not exist; MLflow would create an empty
  one in its place (in the client's working directory with the default ``--state-dir``), so it is checked before any
  MLflow client is built;
- ``load_failures``: after loading, every model failed (each one with its reason, shortened).

The checks are pure functions of the settings (and the filesystem): nothing here creates a file. ``load_within``
loads the configured models with a deadline (``--load-timeout``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from server.settings import DeploymentSpec, Settings

if TYPE_CHECKING:  # the checks run before the serving stack (MLflow) is imported
    from server.lifecycle.manager import ModelManager

REASON_CHARS = 200
"""A load failure's reason is cut to this many characters (one line) in the start-up message."""


def shorten(reason: str, limit: int = REASON_CHARS) -> str:
    """``reason`` on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    text = " ".join(reason.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def nothing_to_serve(settings: Settings) -> str | None:
    """The message when no model is configured (and the registry is not served on demand), else ``None``."""
    if settings.all_deployments() or settings.policy.mode == "registry":
        return None
    return (
        "modelport: nothing to serve over stdio: no model is configured.\n"
        "Fix one of:\n"
        "  - name the models:  modelport mcp --stdio --state-dir DIR models:/NAME@ALIAS models:/NAME/VERSION ...\n"
        "  - or set MODELPORT_MODELS=models:/NAME@ALIAS,... in the client's environment\n"
        "  - or list deployments in a YAML file:  --config FILE\n"
        "  - no registry yet? create the demo models:  modelport demo --no-serve --state-dir DIR"
    )


def local_store_path(uri: str) -> Path | None:
    """The file or folder a local MLflow store URI names (``sqlite:///...``, ``file:...``, a bare path), else
    ``None`` (a remote store, or sqlite in memory)."""
    if uri.startswith("sqlite:"):
        rest = uri.removeprefix("sqlite:")
        if not rest.startswith("///"):  # sqlite:// (in memory) or a form SQLAlchemy does not open as a file
            return None
        path = unquote(rest[3:].split("?", 1)[0])
        return None if path in ("", ":memory:") else Path(path)
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # a bare path (C:\... on Windows)
        return Path(uri)
    return None


def registry_problem(settings: Settings) -> str | None:
    """The message when the registry (or tracking store) is local and does not exist, else ``None``.

    Building an MLflow client for a missing sqlite file creates it (and its folder), so this runs first.
    """
    stores = [("registry", settings.effective_registry_uri)]
    if settings.effective_tracking_uri != settings.effective_registry_uri:
        stores.append(("tracking store", settings.effective_tracking_uri))
    for what, uri in stores:
        path = local_store_path(uri)
        if path is None or path.exists():
            continue
        lines = [
            f"modelport: {what} not found: {uri} ({path} does not exist; modelport will not create an empty one).",
            "Fix one of:",
            "  - point at your registry:  --registry-uri URI  (or MODELPORT_REGISTRY_URI; e.g. http://mlflow:5000, "
            "sqlite:////abs/path/mlflow.db)",
            "  - point at the folder that holds mlflow.db:  --state-dir DIR  (or MODELPORT_STATE_DIR)",
            "  - create the demo registry there:  modelport demo --no-serve --state-dir DIR",
        ]
        if settings.registry_uri is None and not settings.state_dir.is_absolute():
            lines.append(
                f"The default --state-dir {settings.state_dir} is relative to the working directory ({Path.cwd()}); "
                "MCP clients start servers in a directory of their choosing, so pass an absolute --state-dir."
            )
        if settings.registry_uri is None and os.environ.get("MLFLOW_TRACKING_URI"):
            lines.append(
                "MLFLOW_TRACKING_URI is set, but modelport does not read it: pass it as --registry-uri "
                '"$MLFLOW_TRACKING_URI".'
            )
        return "\n".join(lines)
    return None


def load_failures(settings: Settings, failures: Mapping[str, str], model_uris: Mapping[str, str]) -> str:
    """The message when no configured model could be loaded: every model with its (shortened) reason.

    Args:
        settings: for the registry URI named in the message.
        failures: deployment key → reason.
        model_uris: deployment key → the model URI as configured.
    """
    lines = ["modelport: no model could be loaded, so there is nothing to serve over stdio:"]
    for key in sorted(model_uris):
        lines.append(f"  - {model_uris[key]}: {shorten(failures.get(key, 'not loaded'))}")
    where = f"--registry-uri {settings.registry_uri}" if settings.registry_uri else f"--state-dir {settings.state_dir}"
    lines.append(f"Registry: {settings.effective_registry_uri}. See what it holds with:  modelport models {where}")
    return "\n".join(lines)


async def load_within(
    manager: ModelManager, specs: list[DeploymentSpec], timeout_s: float
) -> asyncio.Task[None] | None:
    """Load ``specs`` (one after the other, as ``serve`` does) and wait at most ``timeout_s`` seconds.

    Returns ``None`` when every model is loaded or failed; otherwise the task still loading the rest (it goes on in
    the background: a model that arrives later is added to the table and announced with ``list_changed``). Models
    not loaded by the deadline are recorded as failed ("not loaded within ...") until they arrive.
    """
    from server.lifecycle.manager import key_of

    task = asyncio.get_running_loop().create_task(manager.deploy_all(specs), name="stdio-load")
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        task.result()
        return None
    table = manager.table
    failed = table.failures()
    for spec in specs:
        key = key_of(spec.model)
        if table.get(key) is None and key not in failed:
            table.mark_failed(key, f"not loaded within {timeout_s:g} s (--load-timeout); still loading")
    return task
