"""The observability layer of one process, built once by the composition root and handed to the doors."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.registry import CollectorRegistry

from server.deployments import DeploymentTable
from server.ops.cost import Prices
from server.ops.exposition import ModelportCollector, registry_for
from server.ops.metrics import Metrics
from server.ops.process import ProcessProbe
from server.ops.record import CaptureSink, Recorder
from server.ops.timeline import Timeline
from server.settings import Settings


@dataclass
class Observability:
    metrics: Metrics
    timeline: Timeline
    recorder: Recorder
    registry: CollectorRegistry
    currency: str = "USD"
    capture: CaptureSink | None = field(default=None)

    @classmethod
    def build(cls, settings: Settings, table: DeploymentTable, capture: CaptureSink | None = None) -> Observability:
        metrics = Metrics()
        metrics.attach(table)
        probe = ProcessProbe(gpu=settings.providers != "cpu")
        timeline = Timeline(metrics, probe, Prices.of(settings.cost, probe.cores))
        registry = registry_for(ModelportCollector(metrics, timeline))
        return cls(metrics, timeline, Recorder(metrics, capture), registry, settings.cost.currency, capture)
