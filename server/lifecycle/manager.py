"""Deploys, loads on demand, evicts, unloads and hot-swaps deployments in the live table.

Every change goes through ``DeploymentTable.add/remove`` (which notifies the doors, e.g. MCP ``list_changed``).
Batchers are started before a deployment enters the table and drained after it leaves it, so a request never
meets a stopped batcher except in the short window the service retries (``InferenceService``).

Ownership decides what may be unloaded: the configured deployments are owned by ``settings`` and endpoints own
their served entities (pinned unless ``scale_to_zero_enabled``); a deployment loaded on demand has no owner. Only
unpinned deployments are evicted (least recently used first) when the cache is over ``max_models`` or
``max_memory_mb``, or unloaded after ``idle_ttl_s`` without a request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from registry import ModelNotInRegistry, ModelRef, RegistryError
from server.deployments import Deployment, DeploymentTable
from server.errors import ModelNotFound, ModelNotReady, ServingError
from server.lifecycle.loader import ModelLoader
from server.lifecycle.policy import ServingPolicy
from server.lifecycle.residency import Residency
from server.settings import CacheSettings, DeploymentSpec

log = logging.getLogger(__name__)

SETTINGS_OWNER = "settings"


def key_of(model_uri: str) -> str:
    """Deployment key of a model URI: ``name@alias`` or ``name/version``."""
    return model_uri.strip().removeprefix("models:/")


def ref_of(key: str) -> ModelRef:
    """The model reference a deployment key stands for."""
    return ModelRef.parse(f"models:/{key}")


class ModelManager:
    """Loads deployments off the event loop, starts their batchers, swaps, evicts and drains them.

    Args:
        loader: builds deployments from the registry (blocking; run in worker threads).
        table: the live deployments.
        policy: what may be loaded on demand (default: only the listed deployments).
        cache: count/memory bounds, idle TTL and negative-answer TTL.
    """

    def __init__(
        self,
        loader: ModelLoader,
        table: DeploymentTable,
        *,
        policy: ServingPolicy | None = None,
        cache: CacheSettings | None = None,
    ) -> None:
        self.loader = loader
        self.table = table
        self.policy = policy or ServingPolicy()
        self.cache = cache or CacheSettings()
        self.residency = Residency(self.cache)
        self.loads = 0
        """Builds started (on-demand loads, acquisitions and hot swaps), for observability and tests."""
        self._specs: dict[str, DeploymentSpec] = {}
        self._owners: dict[str, dict[str, bool]] = {}
        self._loading: dict[str, asyncio.Task[Deployment]] = {}
        self._misses: dict[str, tuple[float, ServingError]] = {}
        self._swapping: dict[str, asyncio.Lock] = {}
        self.listeners: list[Callable[..., None]] = []
        """Told of lifecycle events: ``listener(kind, key, **detail)`` with kind ``loaded``, ``swapped``,
        ``unloaded`` or ``failed`` (metrics and the dashboard's recent events)."""

    def _emit(self, kind: str, key: str, **detail: Any) -> None:
        for listener in self.listeners:
            try:
                listener(kind, key, **detail)
            except Exception:
                log.exception("lifecycle listener failed", extra={"event": kind, "model": key})

    # -- configured deployments ---------------------------------------------------------------------------------

    async def deploy(self, spec: DeploymentSpec) -> Deployment | None:
        """Load and serve one configured model; on failure record it as FAILED (visible in /models and /health)."""
        key = key_of(spec.model)
        self._specs[key] = spec
        self._owners.setdefault(key, {})[SETTINGS_OWNER] = True
        try:
            return await self._load(key, spec)
        except ServingError as exc:
            if key not in self.table.failures():
                log.error("model failed to load", extra={"model": spec.model, "reason": exc.message})
                self.table.mark_failed(key, exc.message)
            return None

    async def deploy_all(self, specs: list[DeploymentSpec]) -> None:
        for spec in specs:
            await self.deploy(spec)

    async def undeploy(self, key: str) -> bool:
        """Stop serving ``key`` whoever owns it."""
        self._owners.pop(key, None)
        self._specs.pop(key, None)
        dep = self.table.get(key)
        if dep is None:
            return False
        await self._unload(dep, "undeployed")
        return True

    async def stop_all(self) -> None:
        """Refuse new work and drain every deployment's in-flight requests."""
        for task in list(self._loading.values()):
            task.cancel()
        deps = self.table.all()
        await asyncio.gather(*(d.batcher.stop() for d in deps), return_exceptions=True)

    def failed_specs(self) -> dict[str, DeploymentSpec]:
        """Owned deployments (configured or endpoint entities) that failed to load: key → spec."""
        failed = self.table.failures()
        return {key: spec for key, spec in self._specs.items() if key in failed and key in self._owners}

    async def retry(self, key: str) -> Deployment | None:
        """Load a failed owned deployment again (e.g. its alias now points at a loadable version)."""
        spec = self.failed_specs().get(key)
        if spec is None:
            return None
        self._misses.pop(key, None)
        try:
            return await self._load(key, spec)
        except ServingError:
            return None

    # -- on demand ----------------------------------------------------------------------------------------------

    async def ensure(self, name: str, version_or_alias: str | None, miss: ModelNotFound) -> Deployment:
        """The deployment for ``name`` at that version or alias, loading it now if the policy allows.

        Concurrent calls for one version share one load. Unknown versions and refused names raise ``ModelNotFound``
        (remembered for ``negative_ttl_s``); a version that fails to load raises ``ModelNotReady``.

        Args:
            name: registered model name.
            version_or_alias: a version number or an alias (``None`` never loads anything).
            miss: the table's answer, re-raised when nothing may be loaded.
        """
        if version_or_alias is None:
            raise miss
        ref = ModelRef.from_path(name, version_or_alias)
        key = key_of(ref.uri)
        dep = self.table.get(key)
        if dep is not None:
            return dep
        if key in self._loading:
            return await asyncio.shield(self._loading[key])
        owned = key in self._owners
        if not owned and not self.policy.allows_name(name):
            if self.policy.on_demand:
                raise ModelNotFound(f"model '{name}' is not served ({self.policy.describe()})", field="name")
            raise miss
        cached = self._misses.get(key)
        if cached is not None and cached[0] > time.monotonic():
            raise type(cached[1])(cached[1].message, field=cached[1].field)
        check = None if owned or not self.policy.needs_tags else self._tag_check(ref)
        return await self._load(key, self._specs.get(key) or DeploymentSpec(model=ref.uri), check)

    async def acquire(self, spec: DeploymentSpec, owner: str, *, pinned: bool = True) -> Deployment:
        """Serve ``spec`` on behalf of ``owner`` (an endpoint), loading it unless it is served already."""
        key = key_of(spec.model)
        self._owners.setdefault(key, {})[owner] = pinned
        self._specs.setdefault(key, spec)
        dep = self.table.get(key) or await self._load(key, self._specs[key])
        self._apply_owners(dep)
        return dep

    async def release(self, key: str, owner: str) -> None:
        """``owner`` no longer needs ``key``; the last owner to leave unloads it."""
        owners = self._owners.get(key)
        if owners is None or owners.pop(owner, None) is None:
            return
        dep = self.table.get(key)
        if owners:
            if dep is not None:
                self._apply_owners(dep)
            return
        del self._owners[key]
        self._specs.pop(key, None)
        if dep is not None:
            await self._unload(dep, f"released by {owner}")

    # -- cache ------------------------------------------------------------------------------------------------

    async def reap(self, now: float | None = None) -> list[str]:
        """Unload unpinned deployments idle for ``idle_ttl_s`` or more (scale-to-zero); returns their keys.

        Args:
            now: ``time.monotonic()`` to judge idleness against (tests pass a later time instead of waiting).
        """
        now = time.monotonic() if now is None else now
        idle = self.residency.idle(self.table.all(), now, keep=self._loading)
        for dep in idle:
            await self._unload(dep, f"idle for {now - (dep.last_used or now):.0f}s")
        return [d.key for d in idle]

    async def run_reaper(self) -> None:
        """Reap idle deployments forever (a background task of the server); returns at once without a TTL."""
        interval = self.residency.reap_interval_s
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception:
                log.exception("idle reaper failed")

    # -- hot swap -------------------------------------------------------------------------------------------

    async def reload(self, key: str) -> Deployment | None:
        """Rebuild ``key`` from the registry and swap it in if it resolves to another version.

        The new version is loaded, converted, parity-checked and warmed up off the event loop while the old one
        keeps serving; then the table entry is replaced in one step and the old batcher drains its in-flight
        requests. Returns the new deployment, or ``None`` when nothing changed. Raises what the load raised (the
        old deployment keeps serving).
        """
        lock = self._swapping.setdefault(key, asyncio.Lock())
        async with lock:
            old = self.table.get(key)
            if old is None:
                return None
            spec = self._specs.get(key) or DeploymentSpec(model=ref_of(key).uri)
            started = time.perf_counter()
            self.loads += 1
            new = await asyncio.to_thread(self._build, spec)
            if new.model.version == old.model.version or self.table.get(key) is not old:
                return None
            new.lifecycle = dataclasses.replace(
                old.lifecycle,
                pending_version=None,
                last_error=None,
                previous_version=old.model.version,
                swapped_at=time.time(),
            )
            new.last_used = old.last_used
            await new.batcher.start()
            self.table.add(new)
            load_s = round(time.perf_counter() - started, 3)
            log.info(
                "hot swap",
                extra={
                    "model": key,
                    "from_version": old.model.version,
                    "to_version": new.model.version,
                    "load_s": load_s,
                },
            )
            self._emit("swapped", key, from_version=old.model.version, to_version=new.model.version, load_s=load_s)
            await old.batcher.stop(self._drain_s(spec))
            return new

    # -- internals --------------------------------------------------------------------------------------------

    async def _load(
        self, key: str, spec: DeploymentSpec, check: Callable[[], Awaitable[None]] | None = None
    ) -> Deployment:
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_now(key, spec, check), name=f"load-{key}")
            self._loading[key] = task
            task.add_done_callback(lambda t: (self._loading.pop(key, None), t.cancelled() or t.exception()))
        return await asyncio.shield(task)

    async def _load_now(
        self, key: str, spec: DeploymentSpec, check: Callable[[], Awaitable[None]] | None
    ) -> Deployment:
        started = time.perf_counter()
        self.loads += 1
        try:
            if check is not None:
                await check()
            dep = await asyncio.to_thread(self._build, spec)
        except ModelNotFound as exc:  # refused by the tag policy
            raise self._remember(key, exc) from None
        except ModelNotInRegistry as exc:
            raise self._remember(key, ModelNotFound(str(exc), field="version")) from exc
        except ServingError as exc:
            raise self._failed(key, spec, exc.message) from exc
        except (RegistryError, ValueError, OSError) as exc:
            raise self._failed(key, spec, str(exc)) from exc
        except Exception as exc:  # a broken model must not stop the server from serving the others
            log.exception("model failed to load", extra={"model": spec.model})
            raise self._failed(key, spec, f"{type(exc).__name__}: {exc}") from exc
        self._misses.pop(key, None)
        dep.touch()
        self._apply_owners(dep)
        await dep.batcher.start()
        old = self.table.add(dep)
        if old is not None:
            await old.batcher.stop(self._drain_s(spec))
        load_s = round(time.perf_counter() - started, 3)
        log.info(
            "model ready",
            extra={
                "model": key,
                "version": dep.model.version,
                "cold_start_s": load_s,
                "memory_mb": round(dep.memory_bytes / 2**20, 3),
                "on_demand": not dep.lifecycle.owners,
            },
        )
        self._emit("loaded", key, version=dep.model.version, load_s=load_s, on_demand=not dep.lifecycle.owners)
        await self._evict(keep=key)
        return dep

    def _build(self, spec: DeploymentSpec) -> Deployment:
        dep = self.loader.build(spec)
        dep.memory_bytes = self.residency.footprint(dep)
        return dep

    def _tag_check(self, ref: ModelRef) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            info = await asyncio.to_thread(self.loader.registry.resolve, ref)
            if not self.policy.allows_tags(info.tags):
                raise ModelNotFound(
                    f"{ref.name} version {info.version} is not served ({self.policy.describe()})", field="version"
                )

        return check

    def _remember(self, key: str, exc: ServingError) -> ServingError:
        if self.cache.negative_ttl_s > 0:
            self._misses[key] = (time.monotonic() + self.cache.negative_ttl_s, exc)
        return exc

    def _failed(self, key: str, spec: DeploymentSpec, reason: str) -> ServingError:
        log.error("model failed to load", extra={"model": spec.model, "reason": reason})
        self.table.mark_failed(key, reason)
        self._emit("failed", key, reason=reason)
        return self._remember(key, ModelNotReady(f"model '{key}' failed to load: {reason}", field="version"))

    def _apply_owners(self, dep: Deployment) -> None:
        owners = self._owners.get(dep.key, {})
        dep.lifecycle = dataclasses.replace(dep.lifecycle, pinned=any(owners.values()), owners=tuple(sorted(owners)))

    async def _evict(self, keep: str) -> None:
        """Unload least recently used unpinned deployments while the cache is over its bounds."""
        for victim in self.residency.to_evict(self.table.all(), keep={keep, *self._loading}):
            await self._unload(victim, "evicted (least recently used)")

    async def _unload(self, dep: Deployment, reason: str) -> None:
        if self.table.get(dep.key) is dep:
            self.table.remove(dep.key)
        log.info("model unloaded", extra={"model": dep.key, "version": dep.model.version, "reason": reason})
        self._emit("unloaded", dep.key, version=dep.model.version, reason=reason)
        await dep.batcher.stop(self._drain_s(self._specs.get(dep.key)))

    def _drain_s(self, spec: DeploymentSpec | None) -> float:
        settings = self.loader.settings
        return (settings.batching_for(spec) if spec else settings.batching).timeout_s + 5.0
