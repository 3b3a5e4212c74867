"""Counters, histograms, cost attribution and the per-second timeline, with fake clocks and probes."""

from __future__ import annotations

import pytest

from server.ops import metrics as metrics_module
from server.ops.cost import Prices, Usage, attribute
from server.ops.histogram import LATENCY_MS, Histogram, quantile
from server.ops.metrics import Metrics
from server.ops.process import ProcessSample
from server.ops.timeline import Timeline
from server.settings import CostSettings


def test_histogram_buckets_and_quantiles() -> None:
    h = Histogram((1.0, 10.0, 100.0))
    for v in (0.5, 5.0, 5.0, 50.0, 500.0):
        h.observe(v)
    assert h.counts == [1, 2, 1, 1] and h.count == 5 and h.sum == pytest.approx(560.5)
    assert h.cumulative() == [(1.0, 1), (10.0, 3), (100.0, 4), (float("inf"), 5)]
    assert quantile(h.bounds, h.counts, 0.5) == pytest.approx(1.0 + 9.0 * (1.5 / 2))
    assert quantile(h.bounds, [0, 0, 0, 0], 0.5) is None


def test_observe_counts_status_classes_rows_and_skips_modelless_requests() -> None:
    m = Metrics()
    m.observe("rest", {"model": "churn", "version": "3", "rows": 4}, 200, 0.002)
    m.observe("rest", {"model": "churn", "version": "3", "rows": 2}, 200, 0.004)
    m.observe("rest", {"model": "churn", "version": "3"}, 429, 0.0001)
    m.observe("mcp", {"model": "churn", "version": "3", "rows": 1}, 500, 0.01)
    m.observe("rest", {}, 404, 0.001)  # no model: not a model request
    rest = m.series[("rest", "churn", "3", None, None, None)]
    assert rest.by_class == [0, 2, 0, 1, 0] and rest.rows == 6 and rest.requests == 3
    assert m.series[("mcp", "churn", "3", None, None, None)].by_class[4] == 1
    assert len(m.series) == 2
    assert m.requests_by_model() == {("churn", "3"): (4, 7)}


def test_unknown_names_cannot_grow_the_series_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_MAX_SERIES", 3)
    m = Metrics()
    for i in range(10):
        m.observe("rest", {"model": f"m{i}"}, 404, 0.001)
    assert len(m.series) == 4
    assert m.series[("rest", "(other)", None, None, None, None)].requests == 7


def test_lifecycle_events_update_counters() -> None:
    m = Metrics()
    m.event("loaded", "churn@champion", version="1", load_s=1.5, on_demand=True)
    m.event("swapped", "churn@champion", from_version="1", to_version="2", load_s=0.7)
    m.event("unloaded", "churn@champion", reason="evicted (least recently used)")
    c = m.counters("churn@champion")
    assert (c.loads, c.loads_on_demand, c.swaps, c.evictions, c.unloads, c.load_s) == (1, 1, 1, 1, 1, 0.7)
    assert [e.kind for e in m.events] == ["loaded", "swapped", "unloaded"]


def test_cost_attribution_rule() -> None:
    prices = Prices.of(CostSettings(cpu_core_per_hour=3.6, gpu_per_hour=36.0), cores=4)
    assert prices is not None and prices.core_second == pytest.approx(0.001)
    usage = {"a/1": Usage(busy_s=2.0, requests=300, rows=600), "b/1": Usage(busy_s=1.0, requests=100, rows=100),
             "g/1": Usage(busy_s=1.0, requests=0, rows=0, gpu=True)}  # fmt: skip
    costs = attribute(usage, process_cpu_s=5.0, prices=prices)  # handling = 5 - (2 + 1) = 2 s, split 3:1
    assert costs["a/1"].runtime == pytest.approx(0.002) and costs["a/1"].handling == pytest.approx(0.0015)
    assert costs["b/1"].total == pytest.approx(0.001 + 0.0005)
    assert costs["a/1"].per_1k_requests == pytest.approx(0.0035 / 300 * 1000)
    assert costs["a/1"].per_1k_rows == pytest.approx(0.0035 / 600 * 1000)
    assert costs["g/1"].runtime == pytest.approx(0.01) and costs["g/1"].per_1k_requests is None
    assert Prices.of(CostSettings(), cores=4) is None
    machine = Prices.of(CostSettings(machine_per_hour=7.2), cores=2)
    assert machine is not None and machine.core_second == pytest.approx(0.001)


class FakeProbe:
    cores = 2

    def __init__(self) -> None:
        self.wall, self.cpu = 100.0, 10.0

    def sample(self) -> ProcessSample:
        return ProcessSample(self.wall, self.cpu, 300 * 2**20, 1000 * 2**20)


def test_timeline_rates_and_minute_figures() -> None:
    m, probe = Metrics(), FakeProbe()
    timeline = Timeline(m, probe, None)  # type: ignore[arg-type]
    timeline.tick()
    for i in range(10):
        m.observe("databricks", {"model": "churn", "version": "1", "endpoint": "ep", "rows": 1},
                  500 if i == 0 else 200, 0.004)  # fmt: skip
    probe.wall, probe.cpu = 102.0, 11.0
    timeline.tick()
    series = timeline.series("endpoint:ep")
    assert series["rps"] == [5.0] and series["error_rate"] == [0.1]
    assert series["cpu_percent"] == [25.0] and series["rss_mb"] == [300.0]
    assert 2.5 <= series["p50_ms"][0] <= 5.0
    minute = timeline.minute("endpoint:ep")
    assert minute is not None
    assert (minute["requests"], minute["c4xx"], minute["c5xx"]) == (10, 0, 1)
    assert minute["mem_percent"] == pytest.approx(30.0)
    assert timeline.series("model:churn")["rps"] == [5.0]
    assert LATENCY_MS[0] > 0
