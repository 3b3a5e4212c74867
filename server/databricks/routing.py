"""Traffic split by percentage: smooth weighted round-robin (nginx's), deterministic and exact.

Over every 100 consecutive calls each served entity gets exactly its percentage, interleaved as evenly as possible
(90/10 gives nine A's per B, never a burst of ten B's), so a split is honoured within a request even over few calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.errors import ModelNotReady


class TrafficRouter:
    """Picks the served entity for each call.

    Args:
        routes: ``(served entity name, percentage)``; zero-percentage routes are never picked.
    """

    def __init__(self, routes: Sequence[tuple[str, int]]) -> None:
        self._routes = [(name, pct) for name, pct in routes if pct > 0]
        self._total = sum(pct for _, pct in self._routes)
        self._current = {name: 0 for name, _ in self._routes}

    def pick(self) -> str:
        """The next served entity."""
        if not self._routes:
            raise ModelNotReady("the endpoint routes no traffic (every percentage is 0)", field="traffic_config")
        best = None
        for name, pct in self._routes:
            self._current[name] += pct
            if best is None or self._current[name] > self._current[best]:
                best = name
        assert best is not None
        self._current[best] -= self._total
        return best
