"""An endpoint's ``auto_capture_config`` turns its inference table on: every request and response, failures too,
lands in Delta with Databricks' columns, the client's ``client_request_id`` and the caller."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from tests.lifecycle import ScorerRegistry, live

pytestmark = pytest.mark.integration


def test_endpoint_auto_capture_writes_the_inference_table(
    scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = scorers.register("captured", [3])
    state = tmp_path_factory.mktemp("capture")
    with live(scorers.settings(state)) as running, running.client() as c:
        config = {
            "served_entities": [{"name": "v1", "entity_name": name, "entity_version": "1"}],
            "auto_capture_config": {"catalog_name": "ml", "schema_name": "audit", "table_name_prefix": "churn_ep"},
        }
        assert c.post("/api/2.0/serving-endpoints", json={"name": "cap-ep", "config": config}).status_code == 200
        assert running.components.endpoints.wait_settled("cap-ep", 60)
        got = c.get("/api/2.0/serving-endpoints/cap-ep").json()
        assert got["config"]["auto_capture_config"]["table_name_prefix"] == "churn_ep"
        for i in range(3):
            body = {"inputs": {"x": [float(i)]}, "client_request_id": f"req-{i}"}
            assert c.post("/serving-endpoints/cap-ep/invocations", json=body).status_code == 200
        assert c.post("/serving-endpoints/cap-ep/invocations", json={"inputs": {"nope": [1]}}).status_code == 400
        tables = running.components.observability.capture
        assert tables is not None and tables.flush(timeout=60)  # type: ignore[attr-defined]
    rows = DeltaTable(str(state / "tables" / "ml" / "audit" / "churn_ep_payload")).to_pyarrow_dataset()
    table = rows.to_table(use_threads=False).sort_by("timestamp_ms").to_pylist()
    assert [r["status_code"] for r in table] == [200, 200, 200, 400]
    assert [r["client_request_id"] for r in table] == ["req-0", "req-1", "req-2", None]
    meta = dict(table[0]["request_metadata"])
    assert meta["endpoint_name"] == "cap-ep" and meta["model_name"] == name and meta["model_version"] == "1"
    assert meta["served_entity_name"] == "v1" and meta["door"] == "databricks"
    assert '"predictions":[3.0]' in table[1]["response"].replace(" ", "")
    assert "client_request_id" in table[0]["request"]
