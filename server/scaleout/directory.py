"""The replicas' directory: where each replica listens, and the events every replica must hear (no Ray import).

``server.scaleout.ray_serve`` runs one ``Directory`` as a Ray actor owned by the driver. Each replica registers its
address (deployment, ``host:port``) once it listens and then beats every ``BEAT_S``; each beat returns the events
published since its last one. The driver reads ``members()`` to keep the front (HAProxy) pointed at the live
replicas. Events carry what one replica learned for all of them: a registry webhook received by one replica
(``("alias", model name)``) makes every replica check that model's aliases at once, instead of at its next poll;
a Databricks endpoint created, changed or deleted through one replica (``("endpoint", name)``) is taken from the
shared store by the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

BEAT_S = 0.5
"""Seconds between a replica's beats."""
STALE_S = 3.0
"""A replica silent for this long is left out of ``members()`` (killed; its health checks fail sooner)."""
KEPT_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class Member:
    """One listening replica."""

    deployment: str
    replica: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


Event = tuple[str, str, str]
"""``(kind, subject, origin replica)``: ``("alias", model name, replica)`` (a registry webhook: check the model's
aliases now) or ``("endpoint", endpoint name, replica)`` (a Databricks endpoint changed: take it from the store)."""


class Directory:
    """Replica addresses and a bounded event log (the body of a Ray actor; plain Python, tested without Ray).

    Args:
        clock: monotonic seconds (tests pin it).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._members: dict[str, Member] = {}
        self._seen: dict[str, float] = {}
        self._events: list[tuple[int, Event]] = []
        self._seq = 0

    def register(self, member: Member) -> int:
        """Add (or move) a replica; the event sequence number it starts after (it missed nothing it needs)."""
        self._members[member.replica] = member
        self._seen[member.replica] = self._clock()
        return self._seq

    def leave(self, replica: str) -> None:
        """A replica stopping: out of ``members()`` now, before it stops listening."""
        self._members.pop(replica, None)
        self._seen.pop(replica, None)

    def beat(self, member: Member, after: int) -> tuple[int, list[Event], int]:
        """``member`` is alive (registered again if it was judged stale); the events others published after
        sequence ``after``, the sequence to ask after next, and how many live replicas its deployment has (it
        enforces that share of the rate limits)."""
        self._members[member.replica] = member
        self._seen[member.replica] = self._clock()
        events = [event for seq, event in self._events if seq > after and event[2] != member.replica]
        now = self._clock()  # counted, not listed: every replica beats twice a second
        peers = sum(
            1 for r, m in self._members.items() if m.deployment == member.deployment and now - self._seen[r] <= STALE_S
        )
        return self._seq, events, max(peers, 1)

    def events(self, after: int) -> tuple[int, list[Event]]:
        """Every event published after sequence ``after`` (the driver's view), and the sequence to ask after next."""
        return self._seq, [event for seq, event in self._events if seq > after]

    def publish(self, kind: str, subject: str, origin: str) -> int:
        """Record an event for every replica but ``origin`` (it acted already); its sequence number."""
        self._seq += 1
        self._events.append((self._seq, (kind, subject, origin)))
        del self._events[:-KEPT_EVENTS]
        return self._seq

    def members(self) -> list[Member]:
        """Replicas that beat within ``STALE_S``, ordered by deployment then address."""
        now = self._clock()
        live = [m for r, m in self._members.items() if now - self._seen[r] <= STALE_S]
        return sorted(live, key=lambda m: (m.deployment, m.host, m.port))
