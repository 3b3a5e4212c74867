"""Merging the replicas' dashboard feeds (the shape of ``server/rest/dashboard.py``'s feed) into one."""

from __future__ import annotations

from typing import Any

import pytest

from server.scaleout.feed import MAX_EVENTS, merge_feeds

KEYS = ("rps", "p50_ms", "p99_ms", "error_rate", "batch_rows", "queue_depth", "cpu_percent", "rss_mb", "gpu_percent")


def series(t: list[float], **values: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"t": t}
    for key in (*KEYS, "cost_per_1k"):
        out[key] = values.get(key, [None] * len(t))
    return out


def feed(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "now": 100.0, "auth": False, "principal": None, "metrics": True, "currency": "USD", "cost": True,
        "group": "all", "groups": ["all", "model:iris"],
        "current": {"rps": 100.0, "p50_ms": 2.0, "p99_ms": 9.0, "error_rate": 0.0},
        "series": series([98.2, 99.2], rps=[90.0, 100.0], p99_ms=[8.0, 9.0], error_rate=[0.0, 0.0],
                         queue_depth=[1, 2], rss_mb=[300.0, 301.0]),
        "deployments": [{"key": "iris@champion", "name": "iris", "version": "1", "loaded_at": 10.0, "rps": 100.0,
                         "p50_ms": 2.0, "p99_ms": 9.0, "error_rate": 0.0, "queue_depth": 1, "cost_per_1k": 0.01}],
        "endpoints": [], "failures": [], "events": [{"at": 10.0, "kind": "load", "key": "iris@champion", "detail": ""}],
    }  # fmt: skip
    return {**base, **over}


def test_two_replicas_add_up_rates_weight_errors_and_keep_the_slowest_latency() -> None:
    b = feed(
        now=101.0,
        current={"rps": 300.0, "p50_ms": 1.0, "p99_ms": 20.0, "error_rate": 0.1},
        series=series(
            [98.6, 99.6, 100.6],
            rps=[10.0, 300.0, 5.0],
            p99_ms=[1.0, 20.0, 3.0],
            error_rate=[0.0, 0.1, 1.0],
            queue_depth=[0, 3, 0],
            rss_mb=[400.0, 401.0, 402.0],
        ),
        deployments=[
            {
                "key": "iris@champion",
                "name": "iris",
                "version": "2",
                "loaded_at": 20.0,
                "rps": 300.0,
                "p50_ms": 1.0,
                "p99_ms": 20.0,
                "error_rate": 0.1,
                "queue_depth": 3,
                "cost_per_1k": 0.03,
            }
        ],
        groups=["all", "model:iris", "endpoint:ep"],
        events=[{"at": 20.0, "kind": "swap", "key": "iris@champion", "detail": "1 -> 2"}],
        failures=[{"key": "wine/1", "reason": "boom"}],
    )
    merged = merge_feeds({"a:1": feed(), "b:2": b})
    assert merged["replicas"] == 2 and merged["now"] == 101.0
    assert merged["groups"] == ["all", "model:iris", "endpoint:ep"]
    assert merged["current"] == {"rps": 400.0, "p50_ms": 2.0, "p99_ms": 20.0, "error_rate": 0.075}
    s = merged["series"]
    assert s["t"] == [98.0, 99.0, 100.0, 101.0]  # whole seconds: a's 99.2 and b's 98.6 are one point
    assert s["rps"] == [90.0, 110.0, 300.0, 5.0]
    assert s["p99_ms"] == [8.0, 9.0, 20.0, 3.0]
    assert s["error_rate"] == [0.0, 0.0, 0.1, 1.0]
    assert s["rss_mb"] == [300.0, 701.0, 401.0, 402.0]  # summed where both replicas have the second
    assert s["gpu_percent"] == [None] * 4 and s["cost_per_1k"] == [None] * 4
    (dep,) = merged["deployments"]
    assert (dep["version"], dep["versions"], dep["replicas"]) == ("2", ["1", "2"], 2)  # the newest first, all listed
    assert (dep["rps"], dep["p99_ms"], dep["queue_depth"]) == (400.0, 20.0, 4.0)
    assert dep["cost_per_1k"] == pytest.approx((0.01 * 100 + 0.03 * 300) / 400)
    assert [e["replica"] for e in merged["events"]] == ["b:2", "a:1"]  # newest first, each with its replica
    assert merged["failures"] == [{"key": "wine/1", "reason": "boom"}]


def test_series_points_align_on_whole_seconds() -> None:
    a = feed(series=series([10.4, 11.4], rps=[1.0, 2.0]))
    b = feed(series=series([11.0, 12.0], rps=[10.0, 20.0]))
    s = merge_feeds({"a": a, "b": b})["series"]
    assert s["t"] == [10.0, 11.0, 12.0]
    assert s["rps"] == [1.0, 12.0, 20.0]


def test_a_single_feed_keeps_its_shape_and_no_feed_is_an_error() -> None:
    one = feed()
    merged = merge_feeds({"a": one})
    assert merged["replicas"] == 1 and merged["deployments"][0]["replicas"] == 1
    assert {k: v for k, v in merged.items() if k not in ("replicas", "deployments", "events")} == {
        k: v for k, v in one.items() if k not in ("deployments", "events")
    }
    with pytest.raises(ValueError):
        merge_feeds({})


def test_events_are_capped_newest_first() -> None:
    events = [{"at": float(i), "kind": "load", "key": "k", "detail": ""} for i in range(MAX_EVENTS)]
    merged = merge_feeds({"a": feed(events=events), "b": feed(events=events)})
    assert len(merged["events"]) == MAX_EVENTS and merged["events"][0]["at"] == MAX_EVENTS - 1
