"""Traffic split: exact percentages over every 100 calls, evenly interleaved, zero-percent routes never picked."""

from __future__ import annotations

from collections import Counter

import pytest

from server.databricks.routing import TrafficRouter
from server.errors import ModelNotReady


def test_split_is_exact_and_interleaved() -> None:
    router = TrafficRouter([("a", 90), ("b", 10)])
    picks = [router.pick() for _ in range(3000)]
    assert Counter(picks) == {"a": 2700, "b": 300}
    assert max(len(run) for run in "".join(picks).split("a")) == 1  # never two b's in a row
    three = TrafficRouter([("a", 50), ("b", 30), ("c", 20), ("d", 0)])
    assert Counter(three.pick() for _ in range(100)) == {"a": 50, "b": 30, "c": 20}


def test_no_positive_route_is_not_ready() -> None:
    with pytest.raises(ModelNotReady):
        TrafficRouter([("a", 0)]).pick()
