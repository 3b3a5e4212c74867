"""Rendering for scrapers: ``prometheus_client`` over modelport's own counters (a custom ``Collector``: nothing is
updated through the library on the request path), and Databricks' per-endpoint metrics export.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from server.ops.histogram import Histogram
from server.ops.metrics import SERIES_LABELS, Metrics
from server.ops.timeline import Group, Timeline

_CODES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_DEP_LABELS = ("deployment", "model", "version")


def _buckets(h: Histogram, scale: float = 1.0) -> list[tuple[str, float]]:
    return [("+Inf" if b == float("inf") else repr(b * scale), float(n)) for b, n in h.cumulative()]


class ModelportCollector(Collector):
    """Every modelport series, built at scrape time from ``Metrics`` (and ``Timeline`` for cost)."""

    def __init__(self, metrics: Metrics, timeline: Timeline | None = None) -> None:
        self.metrics = metrics
        self.timeline = timeline

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily("modelport_requests", "Answered requests by status class",
                                       labels=(*SERIES_LABELS, "code"))  # fmt: skip
        latency = HistogramMetricFamily("modelport_request_latency_seconds", "Server latency", labels=SERIES_LABELS)
        rows = CounterMetricFamily("modelport_rows", "Rows scored (answered requests)", labels=SERIES_LABELS)
        for key, s in m.series.items():
            labels = [v or "" for v in key]
            for code, n in zip(_CODES, s.by_class, strict=True):
                if n:
                    requests.add_metric([*labels, code], n)
            latency.add_metric(labels, _buckets(s.latency_ms, 0.001), s.latency_ms.sum / 1000.0)
            rows.add_metric(labels, s.rows)
        yield from (requests, latency, rows)
        yield from self._deployments()
        yield from self._process()

    def _deployments(self) -> Iterator[Metric]:
        m = self.metrics
        fam: dict[str, Metric] = {
            "queue": HistogramMetricFamily("modelport_queue_wait_seconds", "Queue wait of each batch's oldest request",
                                           labels=_DEP_LABELS),
            "brows": HistogramMetricFamily("modelport_batch_rows", "Rows per runtime batch", labels=_DEP_LABELS),
            "breqs": HistogramMetricFamily("modelport_batch_requests", "Requests per batch", labels=_DEP_LABELS),
            "busy": CounterMetricFamily("modelport_runtime_busy_seconds", "Time in the runtime", labels=_DEP_LABELS),
            "batches": CounterMetricFamily("modelport_batches", "Runtime batches", labels=_DEP_LABELS),
            "failed": CounterMetricFamily("modelport_batch_failures", "Failed runtime batches", labels=_DEP_LABELS),
            "load": GaugeMetricFamily("modelport_load_seconds", "Last load+convert+warm-up", labels=_DEP_LABELS),
            "loads": CounterMetricFamily("modelport_loads", "Loads", labels=_DEP_LABELS),
            "demand": CounterMetricFamily("modelport_loads_on_demand", "Loads on a first request", labels=_DEP_LABELS),
            "swaps": CounterMetricFamily("modelport_swaps", "Hot swaps (alias moved)", labels=_DEP_LABELS),
            "evict": CounterMetricFamily("modelport_evictions", "Unloads to stay within the cache", labels=_DEP_LABELS),
            "unload": CounterMetricFamily("modelport_unloads", "Unloads (evicted, idle, released)", labels=_DEP_LABELS),
            "flight": GaugeMetricFamily("modelport_in_flight_requests", "Requests in the runtime", labels=_DEP_LABELS),
            "queued": GaugeMetricFamily("modelport_queued_requests", "Requests waiting for the runtime",
                                        labels=_DEP_LABELS),
        }  # fmt: skip
        live = m.live()
        for key, c in m.deployments.items():
            labels = [key, c.name, c.version]
            fam["queue"].add_metric(labels, _buckets(c.queue_wait_ms, 0.001), c.queue_wait_ms.sum / 1000.0)  # type: ignore[attr-defined]
            fam["brows"].add_metric(labels, _buckets(c.batch_rows), c.batch_rows.sum)  # type: ignore[attr-defined]
            fam["breqs"].add_metric(labels, _buckets(c.batch_requests), c.batch_requests.sum)  # type: ignore[attr-defined]
            for name, value in (("busy", c.busy_s), ("batches", c.batches), ("failed", c.failed_batches),
                                ("load", c.load_s), ("loads", c.loads), ("demand", c.loads_on_demand),
                                ("swaps", c.swaps), ("evict", c.evictions), ("unload", c.unloads)):  # fmt: skip
                fam[name].add_metric(labels, value)  # type: ignore[attr-defined]
            dep = live.get(key)
            if dep is not None:
                stats = dep.batcher.stats
                fam["flight"].add_metric(labels, stats.in_flight)  # type: ignore[attr-defined]
                fam["queued"].add_metric(labels, stats.queue_depth)  # type: ignore[attr-defined]
        yield from fam.values()
        if self.timeline is not None and self.timeline.prices is not None:
            total = CounterMetricFamily("modelport_cost", "Attributed cost (currency units)", labels=_DEP_LABELS)
            per_req = GaugeMetricFamily("modelport_cost_per_1k_requests", "Cost per 1,000 requests", labels=_DEP_LABELS)
            per_row = GaugeMetricFamily("modelport_cost_per_1k_rows", "Cost per 1,000 rows", labels=_DEP_LABELS)
            for key, cost in self.timeline.costs().items():
                c = m.deployments[key]
                labels = [key, c.name, c.version]
                total.add_metric(labels, cost.total)
                if cost.per_1k_requests is not None:
                    per_req.add_metric(labels, cost.per_1k_requests)
                if cost.per_1k_rows is not None:
                    per_row.add_metric(labels, cost.per_1k_rows)
            yield from (total, per_req, per_row)

    def _process(self) -> Iterator[Metric]:
        probe = self.timeline.probe if self.timeline is not None else None
        if probe is None:
            return
        sample = probe.sample()
        yield CounterMetricFamily("modelport_process_cpu_seconds", "Process CPU time (all threads)", value=sample.cpu_s)
        yield GaugeMetricFamily("modelport_process_resident_memory_bytes", "Resident memory", value=sample.rss_bytes)
        if sample.gpu_utilization is not None:
            yield GaugeMetricFamily("modelport_gpu_utilization_ratio", "GPU utilisation (0-1)",
                                    value=sample.gpu_utilization)  # fmt: skip
            yield GaugeMetricFamily("modelport_gpu_memory_used_bytes", "GPU memory used",
                                    value=float(sample.gpu_memory_used_bytes or 0))  # fmt: skip
        for name, read in self.metrics.gauges.items():
            yield GaugeMetricFamily(name, name.replace("_", " "), value=read())
        for name, read in self.metrics.totals.items():
            yield CounterMetricFamily(name, name.replace("_", " "), value=read())


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its content type: Prometheus text, or OpenMetrics when ``Accept`` asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def registry_for(collector: ModelportCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


# -- Databricks' metrics export -----------------------------------------------------------------------------------

_WORKLOAD_CONCURRENCY = {"small": 4, "medium": 16, "large": 64}


def databricks_export(metrics: Metrics, timeline: Timeline, endpoint: str, concurrency: int) -> bytes:
    """``GET /api/2.0/serving-endpoints/{name}/metrics``: Databricks' names, ``_total`` ones as per-minute gauges."""
    group = f"endpoint:{endpoint}"
    minute = timeline.minute(group) or {"requests": 0, "c4xx": 0, "c5xx": 0, "cpu_percent": 0.0, "mem_percent": 0.0}
    registry = CollectorRegistry(auto_describe=False)
    families: list[Metric] = [
        GaugeMetricFamily("request_count_total", "Requests in the last minute", value=minute["requests"]),
        GaugeMetricFamily("request_4xx_count_total", "4xx answers in the last minute", value=minute["c4xx"]),
        GaugeMetricFamily("request_5xx_count_total", "5xx answers in the last minute", value=minute["c5xx"]),
        GaugeMetricFamily("cpu_usage_percentage", "CPU use of the serving process", value=minute["cpu_percent"]),
        GaugeMetricFamily("mem_usage_percentage", "Memory use of the serving process", value=minute["mem_percent"]),
        GaugeMetricFamily("provisioned_concurrent_requests_total", "Provisioned concurrency", value=concurrency),
    ]
    latency = HistogramMetricFamily("request_latency_ms", "Server latency (ms)", labels=("served_entity_name",))
    for (_, _, _, _, ep, entity), s in metrics.series.items():
        if ep == endpoint:
            latency.add_metric([entity or ""], _buckets(s.latency_ms), s.latency_ms.sum)
    families.append(latency)
    sample = timeline.ticks[-1].process if timeline.ticks else timeline.probe.sample()
    if sample.gpu_utilization is not None:
        families.append(GaugeMetricFamily("gpu_usage_percentage", "GPU use", value=sample.gpu_utilization * 100))
        total = sample.gpu_memory_total_bytes or 0
        used = 100.0 * (sample.gpu_memory_used_bytes or 0) / total if total else 0.0
        families.append(GaugeMetricFamily("gpu_memory_usage_percentage", "GPU memory use", value=used))

    class _Static(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from families

    registry.register(_Static())
    body, _ = render(registry, "text/plain")
    return body


def workload_concurrency(sizes: list[str]) -> int:
    """Databricks' provisioned concurrency of served entities' workload sizes (Small 4, Medium 16, Large 64)."""
    return sum(_WORKLOAD_CONCURRENCY.get(s.lower(), 4) for s in sizes) or 4


__all__ = ["Group", "ModelportCollector", "databricks_export", "registry_for", "render", "workload_concurrency"]
