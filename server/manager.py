"""Deploys and undeploys models into the live table; owns their batchers' lifecycle."""

from __future__ import annotations

import asyncio
import logging

from registry import RegistryError
from server.deployments import Deployment, DeploymentTable
from server.errors import ServingError
from server.loader import ModelLoader
from server.settings import DeploymentSpec

log = logging.getLogger(__name__)


class ModelManager:
    """Loads deployments off the event loop, starts their batchers, and drains them on shutdown."""

    def __init__(self, loader: ModelLoader, table: DeploymentTable) -> None:
        self.loader = loader
        self.table = table

    async def deploy(self, spec: DeploymentSpec) -> Deployment | None:
        """Load and serve one model; on failure record it as FAILED (visible in /models and /health) and go on."""
        try:
            dep = await asyncio.to_thread(self.loader.build, spec)
        except (RegistryError, ServingError, ValueError, OSError) as exc:
            self._failed(spec, str(exc))
            return None
        except Exception as exc:  # a broken model must not stop the server from serving the others
            log.exception("model failed to load", extra={"model": spec.model})
            self._failed(spec, f"{type(exc).__name__}: {exc}")
            return None
        await dep.batcher.start()
        old = self.table.add(dep)
        if old is not None:
            log.info(
                "deployment replaced",
                extra={"model": dep.key, "from_version": old.model.version, "to_version": dep.model.version},
            )
            await old.batcher.stop()
        return dep

    async def deploy_all(self, specs: list[DeploymentSpec]) -> None:
        for spec in specs:
            await self.deploy(spec)

    async def undeploy(self, key: str) -> bool:
        dep = self.table.remove(key)
        if dep is None:
            return False
        await dep.batcher.stop()
        return True

    async def stop_all(self) -> None:
        """Refuse new work and drain every deployment's in-flight requests."""
        deps = self.table.all()
        await asyncio.gather(*(d.batcher.stop() for d in deps), return_exceptions=True)

    def _failed(self, spec: DeploymentSpec, reason: str) -> None:
        key = spec.model.removeprefix("models:/")
        log.error("model failed to load", extra={"model": spec.model, "reason": reason})
        self.table.mark_failed(key, reason)
