"""RegistryClient against a real sqlite MLflow registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registry.client import RegistryClient, input_example_records
from registry.errors import ModelNotInRegistry, RegistryError
from registry.model import RegisteredModelSummary
from registry.signature import ColumnSpec
from registry.uri import ModelRef

pytestmark = pytest.mark.integration


def test_resolve_by_version_fills_everything(client: RegistryClient) -> None:
    info = client.resolve(ModelRef("houses", version="1"))
    assert (info.name, info.version, info.key) == ("houses", "1", "houses/1")
    assert info.aliases == ("challenger",)
    assert info.source.startswith("models:/")
    assert info.run_id and info.experiment_id
    assert info.model_description == "House prices in three cities"
    assert info.version_description is None
    assert info.tags == {"team": "pricing", "stage": "registered-model"}
    assert info.metrics == {"rmse": 0.5}
    assert info.params == {"model": "Pipeline", "rows": "200"}
    assert "sklearn" in info.flavors and "python_function" in info.flavors
    assert info.created_at_ms is not None and info.created_at_ms > 0
    assert info.metadata["modelport"]["output"] == {"description": "Predicted price", "unit": "kEUR"}

    sig = info.signature
    assert sig is not None and not sig.is_tensor
    assert sig.inputs == (
        ColumnSpec("area", "double", description="Living area", unit="m2"),
        ColumnSpec("rooms", "long"),
        ColumnSpec("city", "string", description="City name"),
    )
    assert (sig.output_description, sig.output_unit) == ("Predicted price", "kEUR")

    assert info.input_example is not None and len(info.input_example) == 5
    first = info.input_example[0]
    assert set(first) == {"area", "rooms", "city"}
    assert isinstance(first["area"], float) and isinstance(first["rooms"], int) and isinstance(first["city"], str)


def test_resolve_by_alias_overlays_version_tags(client: RegistryClient) -> None:
    info = client.resolve(ModelRef("houses", alias="champion"))
    assert info.version == "2"
    assert info.aliases == ("champion",)
    assert info.version_description == "Gradient boosting, better RMSE"
    assert info.tags == {"team": "pricing", "stage": "version"}
    assert info.params["model"] == "Pipeline"


def test_resolve_tensor_example_and_other_flavors(client: RegistryClient) -> None:
    info = client.resolve(ModelRef("onnx-linear", version="1"))
    assert info.flavors == ("onnx", "python_function")
    assert info.signature is not None and info.signature.is_tensor
    assert info.signature.inputs == (ColumnSpec("input", "float", shape=(3,)),)
    assert info.input_example is not None and len(info.input_example) == 4
    assert len(info.input_example[0]["input"]) == 3

    custom = client.resolve(ModelRef("custom", version="1"))
    assert custom.flavors == ("python_function",)
    assert custom.input_example is not None and set(custom.input_example[0]) == {"x"}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (ModelRef("nope", version="1"), "registered model 'nope' does not exist"),
        (ModelRef("houses", version="9"), "model 'houses' has no version 9"),
        (ModelRef("houses", alias="gold"), "model 'houses' has no alias 'gold' (aliases: challenger, champion)"),
    ],
)
def test_resolve_unknown_is_model_not_in_registry(client: RegistryClient, ref: ModelRef, message: str) -> None:
    with pytest.raises(ModelNotInRegistry) as err:
        client.resolve(ref)
    assert str(err.value) == message


def test_list_models(client: RegistryClient) -> None:
    models = {m.name: m for m in client.list_models()}
    assert set(models) == {"houses", "churn", "flowers", "xgb-reg", "lgb-clf", "onnx-linear", "odd", "custom"}
    houses = models["houses"]
    assert isinstance(houses, RegisteredModelSummary)
    assert houses.description == "House prices in three cities"
    assert houses.latest_versions == ("2",)
    assert dict(houses.aliases) == {"champion": "2", "challenger": "1"}
    assert dict(houses.tags) == {"team": "pricing", "stage": "registered-model"}
    assert models["churn"].aliases == {} and models["churn"].description is None


def test_download_is_reused(client: RegistryClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = client.resolve(ModelRef("churn", version="1"))
    steps: list[str] = []
    first = client.download(info, tmp_path, progress=steps.append)
    assert steps == ["downloading"]
    assert first == tmp_path / "churn" / "1" / "artifacts"
    assert (first / "MLmodel").is_file() and (first / "model.pkl").is_file()
    assert (first.parent / ".download-complete").is_file()
    assert [p.name for p in first.parent.iterdir() if p.name.startswith(".tmp")] == []

    def no_network(**_kwargs: Any) -> str:
        raise AssertionError("downloaded again")

    monkeypatch.setattr("registry.client.download_artifacts", no_network)
    assert client.download(info, tmp_path, progress=steps.append) == first
    assert steps == ["downloading"]


def test_incomplete_download_is_redone(client: RegistryClient, tmp_path: Path) -> None:
    info = client.resolve(ModelRef("flowers", version="1"))
    partial = tmp_path / "flowers" / "1" / "artifacts"
    partial.mkdir(parents=True)
    (partial / "junk").write_text("half a download")
    path = client.download(info, tmp_path)
    assert path == partial and (path / "MLmodel").is_file() and not (path / "junk").exists()


def test_empty_registry(tmp_path: Path) -> None:
    client = RegistryClient(f"sqlite:///{tmp_path}/empty.db")
    assert client.list_models() == []
    with pytest.raises(ModelNotInRegistry):
        client.resolve(ModelRef("houses", version="1"))
    assert issubclass(ModelNotInRegistry, RegistryError)


def test_input_example_records_shapes() -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": np.array([1, 2], dtype=np.int64), "b": ["x", None]})
    assert input_example_records(frame, None) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    assert input_example_records(np.array([[1.0, 2.0]]), None) == [{"input": [1.0, 2.0]}]
    assert input_example_records({"p": np.array([1, 2]), "q": np.array([3, 4])}, None) == [
        {"p": 1, "q": 3},
        {"p": 2, "q": 4},
    ]
    assert input_example_records({"p": 1}, None) is None
    assert input_example_records("free text", None) is None
    assert input_example_records(None, None) is None
