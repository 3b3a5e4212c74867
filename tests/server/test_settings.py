"""Settings: env, YAML file and explicit overrides, read once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.settings import BatchingSettings, DeploymentSpec, load_settings


def test_precedence_env_then_file_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_PORT", "9001")
    monkeypatch.setenv("MODELPORT_MAX_ROWS", "77")
    monkeypatch.setenv("MODELPORT_MODELS", "models:/a/1,models:/b@champion")
    config = tmp_path / "modelport.yaml"
    config.write_text(
        "port: 9100\n"
        "batching: {max_batch_rows: 64}\n"
        "deployments:\n"
        "  - model: models:/a/1\n"
        "    batching: {max_batch_rows: 8, timeout_s: 2}\n"
    )
    s = load_settings(config, port=None, host="0.0.0.0")
    assert s.port == 9100  # file over env
    assert s.host == "0.0.0.0" and s.max_rows == 77
    specs = s.all_deployments()
    assert [d.model for d in specs] == ["models:/a/1", "models:/b@champion"]
    assert s.batching_for(specs[0]).max_batch_rows == 8
    assert s.batching_for(specs[1]) == BatchingSettings(max_batch_rows=64)
    assert load_settings(config, port=9200).port == 9200  # flags over file


def test_defaults_point_at_the_embedded_registry(tmp_path: Path) -> None:
    s = load_settings(state_dir=tmp_path)
    assert s.effective_registry_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert s.effective_tracking_uri == s.effective_registry_uri
    assert s.cache_dir == tmp_path / "cache"


@pytest.mark.parametrize(
    "bad", ["batching: {max_batch_rows: 0}\n", "colour: blue\n", "deployments: [{model: models:/a/1, extra: 1}]\n"]
)
def test_invalid_settings_are_refused(tmp_path: Path, bad: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(bad)
    with pytest.raises(ValidationError):
        load_settings(config)


def test_deployment_spec_is_frozen() -> None:
    spec = DeploymentSpec(model="models:/a/1")
    with pytest.raises(ValidationError):
        spec.model = "x"  # type: ignore[misc]


def test_unity_catalog_registry_gets_a_databricks_tracking_uri(tmp_path: Path) -> None:
    from server.settings import Settings

    assert Settings(registry_uri="databricks-uc").effective_tracking_uri == "databricks"
    assert Settings(registry_uri="databricks-uc://prod").effective_tracking_uri == "databricks://prod"
    assert Settings(registry_uri="uc:http://localhost:8080", state_dir=tmp_path).effective_tracking_uri.startswith(
        "sqlite:///"
    )
    assert Settings(registry_uri="databricks-uc", tracking_uri="http://x").effective_tracking_uri == "http://x"
    assert Settings(registry_uri="http://mlflow:5000").effective_tracking_uri == "http://mlflow:5000"


def test_one_line_errors() -> None:
    from server.lifecycle.promotion import one_line

    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(RuntimeError()) == "RuntimeError"
    assert len(one_line(ValueError("x" * 1000))) == 300
