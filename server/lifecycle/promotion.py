"""Served aliases follow the registry: when ``@champion`` moves, the new version is hot-swapped in.

Moves are detected two ways: a poller that lists the registry's aliases every ``poll_interval_s``, and MLflow
webhooks (``model_version_alias.created/deleted``, see ``webhooks.py``) that trigger a check of one model at
once. Either way the registry is the truth: a webhook only says *when* to look.

A move is applied by ``ModelManager.reload``: the new version is loaded, converted, parity-checked and warmed up in
the background while the old one serves, then swapped in atomically; in-flight requests finish on the old batcher.
If the new version fails to load, the old one keeps serving and the failure is shown in the listing
(``last_error``) and logged; that version is not retried until the alias moves again or a webhook names the model.
An alias deleted in the registry keeps its last version serving (and says so in ``last_error``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass

from registry.client import RegistryClient
from server.deployments import Deployment
from server.lifecycle.manager import ModelManager

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Promotion:
    """The outcome of one alias move."""

    key: str
    from_version: str
    to_version: str
    swapped: bool
    error: str | None = None


class AliasFollower:
    """Keeps every served alias on the version the registry gives it.

    Args:
        manager: does the hot swap (``reload``).
        registry: where aliases are read (one ``list_models`` call per check).
        interval_s: seconds between polls; 0 disables the poller (webhooks only).
    """

    def __init__(self, manager: ModelManager, registry: RegistryClient, *, interval_s: float = 30.0) -> None:
        self.manager = manager
        self.registry = registry
        self.interval_s = interval_s
        self.history: list[Promotion] = []
        """Every promotion attempted since start, oldest first (bounded)."""
        self._failed: dict[str, str] = {}
        self._inflight: set[str] = set()
        self._recheck: set[str] = set()
        self._tasks: set[asyncio.Task[list[Promotion]]] = set()

    async def run(self) -> None:
        """Poll forever (a background task of the server); returns at once when polling is disabled."""
        if self.interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception as exc:  # one line per failure (a registry down for an hour is 120 lines, not tracebacks)
                log.error("alias poll failed", extra={"reason": one_line(exc)})

    def notify(self, name: str) -> None:
        """A webhook says an alias of ``name`` changed: check it now, in the background (failed versions too)."""
        if any(key.split("@", 1)[0] == name for key in self._inflight):
            self._recheck.add(name)  # checked again when the promotion in flight ends
            return
        task = asyncio.get_running_loop().create_task(self.check({name}, retry_failed=True), name=f"follow-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def check(self, names: Collection[str] | None = None, *, retry_failed: bool = False) -> list[Promotion]:
        """Compare served aliases with the registry and promote the moved ones; waits for the swaps.

        Args:
            names: only these registered models (default: every served alias).
            retry_failed: try again versions whose load failed before.
        """
        aliases = await asyncio.to_thread(self._aliases)
        moves: list[tuple[Deployment, str]] = []
        for dep in self.manager.table.all():
            alias = dep.ref.alias
            if alias is None or (names is not None and dep.model.name not in names) or dep.key in self._inflight:
                continue
            target = aliases.get(dep.model.name, {}).get(alias)
            if target is None:
                if dep.lifecycle.last_error is None:
                    log.warning(
                        "alias deleted in the registry; the last version keeps serving",
                        extra={"model": dep.key, "version": dep.model.version},
                    )
                dep.lifecycle.last_error = (
                    f"alias @{alias} no longer exists in the registry; still serving version {dep.model.version}"
                )
                continue
            if target == dep.model.version or (not retry_failed and self._failed.get(dep.key) == target):
                continue
            moves.append((dep, target))
        results = await asyncio.gather(*(self._promote(dep, target) for dep, target in moves))
        await self._retry_failed(aliases, names)
        return [r for r in results if r is not None]

    async def aclose(self) -> None:
        """Cancel background checks (server shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals --------------------------------------------------------------------------------------------

    async def _promote(self, dep: Deployment, target: str) -> Promotion | None:
        key, current = dep.key, dep.model.version
        dep.lifecycle.pending_version = target
        log.info("promotion started", extra={"model": key, "from_version": current, "to_version": target})
        self._inflight.add(key)
        try:
            new = await self.manager.reload(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            dep.lifecycle.pending_version = None
            dep.lifecycle.last_error = f"version {target} failed to load ({reason}); still serving version {current}"
            self._failed[key] = target
            log.error(
                "promotion failed; the old version keeps serving",
                extra={"model": key, "from_version": current, "to_version": target, "reason": reason},
            )
            return self._record(Promotion(key, current, target, swapped=False, error=reason))
        finally:
            self._inflight.discard(key)
            if dep.model.name in self._recheck:
                self._recheck.discard(dep.model.name)
                self.notify(dep.model.name)
        dep.lifecycle.pending_version = None
        self._failed.pop(key, None)
        if new is None:
            return None
        return self._record(Promotion(key, current, new.model.version, swapped=True))

    async def _retry_failed(self, aliases: dict[str, dict[str, str]], names: Collection[str] | None) -> None:
        """A configured alias that failed to load is tried again once its alias points somewhere else."""
        for key in self.manager.failed_specs():
            name, _, alias = key.partition("@")
            if not alias or (names is not None and name not in names):
                continue
            target = aliases.get(name, {}).get(alias)
            if target is not None and self._failed.setdefault(key, target) != target:
                self._failed[key] = target
                log.info("retrying a failed alias deployment", extra={"model": key, "to_version": target})
                if await self.manager.retry(key) is not None:
                    self._failed.pop(key, None)

    def _record(self, promotion: Promotion) -> Promotion:
        self.history = [*self.history[-99:], promotion]
        return promotion

    def _aliases(self) -> dict[str, dict[str, str]]:
        return {m.name: dict(m.aliases) for m in self.registry.list_models()}

    def _done(self, task: asyncio.Task[list[Promotion]]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alias check failed", extra={"reason": one_line(task.exception())})


def one_line(exc: BaseException | None) -> str:
    """``Type: first line of the message`` (at most 300 characters), for log lines that must stay one line."""
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."
