"""ModelSignature.from_mlflow with column and tensor signatures and the modelport metadata convention."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.models.signature import ModelSignature as MlflowSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from registry.signature import ColumnSpec, ModelSignature
from registry.signature import ParamSpec as ModelportParam

METADATA = {
    "modelport": {
        "columns": {"area": {"description": "Living area", "unit": "m2"}, "pixels": {"description": "Image"}},
        "output": {"description": "Price", "unit": "EUR"},
    }
}


def test_column_signature_with_descriptions_and_params() -> None:
    mlflow_sig = MlflowSignature(
        inputs=Schema([ColSpec("double", "area"), ColSpec("long", "rooms"), ColSpec("string", "city", required=False)]),
        outputs=Schema([ColSpec("double")]),
        params=ParamSchema([ParamSpec("threshold", "double", 0.5)]),
    )
    sig = ModelSignature.from_mlflow(mlflow_sig, METADATA)
    assert not sig.is_tensor
    assert sig.input_names == ["area", "rooms", "city"]
    assert sig.inputs[0] == ColumnSpec("area", "double", description="Living area", unit="m2")
    assert sig.inputs[1] == ColumnSpec("rooms", "long")
    assert sig.inputs[2].optional and sig.inputs[2].dtype == np.dtype(object)
    assert [o.type for o in sig.outputs] == ["double"]
    assert sig.params == (ModelportParam("threshold", "double", 0.5, None),)
    assert (sig.output_description, sig.output_unit) == ("Price", "EUR")
    assert sig.column("rooms") is not None and sig.column("rooms").dtype == np.dtype(np.int64)  # type: ignore[union-attr]
    assert sig.column("missing") is None


def test_without_metadata_descriptions_are_none() -> None:
    sig = ModelSignature.from_mlflow(MlflowSignature(inputs=Schema([ColSpec("float", "x")])), None)
    assert sig.inputs == (ColumnSpec("x", "float"),)
    assert sig.outputs == () and sig.params == ()
    assert sig.output_description is None


def test_tensor_signature() -> None:
    mlflow_sig = MlflowSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28), "pixels")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    sig = ModelSignature.from_mlflow(mlflow_sig, METADATA)
    assert sig.is_tensor
    assert sig.inputs == (ColumnSpec("pixels", "integer", shape=(28, 28), description="Image"),)
    assert sig.outputs[0].type == "float" and sig.outputs[0].shape == (10,)


@pytest.mark.parametrize(("dtype", "kind"), [(np.float64, "double"), (np.int64, "long"), (np.bool_, "boolean")])
def test_unnamed_tensor_is_called_input(dtype: type, kind: str) -> None:
    sig = ModelSignature.from_mlflow(MlflowSignature(inputs=Schema([TensorSpec(np.dtype(dtype), (-1, 4))])))
    assert sig.inputs == (ColumnSpec("input", kind, shape=(4,)),)


def test_with_categories() -> None:
    sig = ModelSignature.from_mlflow(MlflowSignature(inputs=Schema([ColSpec("string", "city"), ColSpec("long", "n")])))
    enriched = sig.with_categories({"city": ("lyon", "paris")})
    assert enriched.inputs[0].categories == ("lyon", "paris")
    assert enriched.inputs[1].categories is None
    assert sig.inputs[0].categories is None
