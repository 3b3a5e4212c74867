"""/metrics (Prometheus and OpenMetrics, guarded by auth) and Databricks' per-endpoint metrics export read by the
databricks-sdk, against a real server scoring real models."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import EndpointCoreConfigInput, ServedEntityInput
from prometheus_client.parser import text_string_to_metric_families

from server.ops.identity import Level
from tests.lifecycle import Live, ScorerRegistry, live

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, str, str]]:
    name = scorers.register("metered", [2])
    settings = scorers.settings(
        tmp_path_factory.mktemp("metrics"),
        models=(f"models:/{name}/1",),
        auth={"required": True},
        cost={"cpu_core_per_hour": 0.36},
    )
    with live(settings) as running:
        tokens = running.components.gate.tokens
        admin = tokens.create("ops", admin=True)
        yield running, name, admin


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    hits = [v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items())]
    assert hits, f"no sample {name} {labels}"
    return sum(hits)


def test_metrics_count_requests_batches_and_cost(served: tuple[Live, str, str]) -> None:
    running, name, admin = served
    with running.client(headers={"Authorization": f"Bearer {admin}"}) as c:
        for _ in range(5):
            assert c.post(f"/model/{name}/1/invocations", json={"inputs": {"x": [1.0, 2.0]}}).status_code == 200
        assert c.post(f"/model/{name}/1/invocations", json={"inputs": {"nope": [1.0]}}).status_code == 400
        running.components.observability.timeline.tick()
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        samples = _samples(r.text)
        assert _value(samples, "modelport_requests_total", model=name, code="2xx", door="rest") == 5
        assert _value(samples, "modelport_requests_total", model=name, code="4xx") == 1
        assert _value(samples, "modelport_request_latency_seconds_count", model=name) == 6
        assert _value(samples, "modelport_batch_rows_sum", model=name) == 10
        assert _value(samples, "modelport_runtime_busy_seconds_total", model=name) > 0
        assert _value(samples, "modelport_loads_total", model=name) == 1
        assert _value(samples, "modelport_cost_total", model=name) > 0
        assert _value(samples, "modelport_cost_per_1k_requests", model=name) > 0
        assert _value(samples, "modelport_process_resident_memory_bytes") > 10 * 2**20
        openmetrics = c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


def test_metrics_need_an_admin_or_a_view_everything_grant(served: tuple[Live, str, str]) -> None:
    running, name, _ = served
    tokens = running.components.gate.tokens
    narrow = tokens.create("narrow", grants={name: Level.CAN_QUERY})
    wide = tokens.create("scraper", grants={"*": Level.CAN_VIEW})
    with running.client() as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": f"Bearer {narrow}"}).status_code == 403
        assert c.get("/metrics", headers={"Authorization": f"Bearer {wide}"}).status_code == 200


def test_databricks_sdk_exports_endpoint_metrics(served: tuple[Live, str, str]) -> None:
    running, name, admin = served
    w = WorkspaceClient(host=running.url, token=admin)
    entity = ServedEntityInput(name="v1", entity_name=name, entity_version="1", workload_size="Medium",
                               scale_to_zero_enabled=False)  # fmt: skip
    w.serving_endpoints.create(name="metered-ep", config=EndpointCoreConfigInput(name="metered-ep",
                               served_entities=[entity])).result(timeout=timedelta(seconds=60))  # fmt: skip
    timeline = running.components.observability.timeline
    timeline.tick()
    for _ in range(7):
        assert w.serving_endpoints.query("metered-ep", inputs={"x": [1.0]}).predictions == [2.0]
    with running.client(headers={"Authorization": f"Bearer {admin}"}) as c:
        assert c.post("/serving-endpoints/metered-ep/invocations", json={"inputs": {"bad": [1]}}).status_code == 400
    timeline.tick()
    contents = w.serving_endpoints.export_metrics("metered-ep").contents
    assert contents is not None
    samples = _samples(contents.read().decode())
    assert _value(samples, "request_count_total") == 8
    assert _value(samples, "request_4xx_count_total") == 1
    assert _value(samples, "request_5xx_count_total") == 0
    assert _value(samples, "provisioned_concurrent_requests_total") == 16
    assert _value(samples, "request_latency_ms_count") == 8  # the 400 never reached a served entity
    assert _value(samples, "request_latency_ms_count", served_entity_name="v1") == 7
    assert 0 <= _value(samples, "cpu_usage_percentage") <= 100
    assert 0 < _value(samples, "mem_usage_percentage") < 100


def test_monitoring_examples_match_what_is_served(served: tuple[Live, str, str]) -> None:
    """Every series the Grafana dashboard queries and every path Prometheus scrapes exists on a real server."""
    import json
    import re
    from pathlib import Path

    import yaml

    running, name, admin = served
    root = Path(__file__).resolve().parents[3] / "examples" / "monitoring"
    dashboard = json.loads((root / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    wanted = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"modelport_[a-z0-9_]+", e)}
    with running.client(headers={"Authorization": f"Bearer {admin}"}) as c:
        assert c.post(f"/model/{name}/1/invocations", json={"inputs": {"x": [1.0]}}).status_code == 200
        served_names = {f.name for f in text_string_to_metric_families(c.get("/metrics").text)}
        scrape = yaml.safe_load((root / "prometheus.yml").read_text())
        paths = {job["metrics_path"] for job in scrape["scrape_configs"]}
        for path in paths:
            if "/serving-endpoints/" in path:
                continue  # needs that endpoint; the export itself is tested above
            assert c.get(path).status_code == 200
    missing = {w for w in wanted if w.removesuffix("_total") not in served_names}
    assert not missing, f"the dashboard queries series modelport does not serve: {sorted(missing)}"
