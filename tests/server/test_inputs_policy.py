"""What the service does with inputs a model does not take (MLflow: ignore them; ``strict_inputs``: refuse them),
and the serving facts shown beside predictions: v2 output datatypes, parity tolerances."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pytest
from onnx import TensorProto, helper

from registry import ColumnSpec, ConvertedModel, Parity
from server.deployments import Deployment, DeploymentTable, onnx_feed_dtypes, onnx_output_dtypes
from server.errors import InvalidInput
from server.rest.v2 import model_metadata
from server.schema import OutputKind
from server.service import InferenceService
from tests.server.fakes import fake_deployment

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def dep() -> AsyncIterator[Deployment]:
    d = fake_deployment()
    await d.batcher.start()
    yield d
    await d.batcher.stop()


def _service(dep: Deployment, **kwargs: bool) -> InferenceService:
    table = DeploymentTable()
    table.add(dep)
    return InferenceService(table, **kwargs)


def _arrow(**columns: list[object]) -> bytes:
    table = pa.table(columns)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


BODY = b'{"dataframe_records": [{"x": 1.5, "tag": "a", "colour": "red"}], "params": {"k": 1}}'


async def test_extra_columns_and_params_are_ignored_and_named_on_the_prediction(dep: Deployment) -> None:
    service = _service(dep)
    prediction = await service.predict_body("doubler", "champion", BODY, "application/json")
    assert prediction.predictions.tolist() == [3.0]
    assert prediction.ignored == ("colour", "params.k") and prediction.ignored_text == "colour,params.k"
    csv = await service.predict_body("doubler", "champion", b"x,tag,colour\n1.5,a,red\n", "text/csv")
    assert csv.predictions.tolist() == [3.0] and csv.ignored == ("colour",)
    arrow = await service.predict_arrow("doubler", "champion", _arrow(x=[1.5], tag=["a"], colour=["red"]))
    assert arrow.predictions.tolist() == [3.0] and arrow.ignored == ("colour",)
    plain = await service.predict_body("doubler", "champion", b'{"inputs": [{"x": 1.5, "tag": "a"}]}', None)
    assert plain.ignored == () and plain.ignored_text is None


async def test_strict_inputs_refuse_them(dep: Deployment) -> None:
    service = _service(dep, strict_inputs=True)
    with pytest.raises(InvalidInput, match=r"unknown input\(s\) \['colour', 'params.k'\]") as err:
        await service.predict_body("doubler", "champion", BODY, "application/json")
    assert err.value.field == "colour"
    with pytest.raises(InvalidInput, match="unknown inputs") as err:
        await service.predict_arrow("doubler", "champion", _arrow(x=[1.5], tag=["a"], colour=["red"]))
    assert err.value.field == "colour"
    with pytest.raises(InvalidInput, match="strict inputs"):
        await service.predict_records("doubler", "champion", [{"x": 1.5, "tag": "a", "colour": "red"}])


async def test_v2_columns_stay_strict_like_triton(dep: Deployment) -> None:
    service = _service(dep)
    columns = {"x": np.array([1.5]), "tag": np.array(["a"], dtype=object), "colour": np.array(["red"])}
    with pytest.raises(InvalidInput, match="unknown inputs") as err:
        await service.predict_columns("doubler", "champion", columns)
    assert err.value.field == "colour"


async def test_out_of_range_values_never_reach_the_model(dep: Deployment) -> None:
    service = _service(dep)
    for body in (b'{"inputs": [{"x": 1e300, "tag": "a"}]}', b'{"inputs": [{"x": 1, "tag": "a"}]}'):
        assert (await service.predict_body("doubler", "champion", body, None)).rows == 1
    with pytest.raises(InvalidInput, match="out of range"):
        await service.predict_body("doubler", "champion", b"x,tag\n" + b"1" * 400 + b",a\n", "text/csv")
    with pytest.raises(InvalidInput, match="out of range"):
        await service.predict_records("doubler", "champion", [{"x": 10**400, "tag": "a"}])


async def test_values_the_onnx_inputs_cannot_hold_are_refused(dep: Deployment) -> None:
    """A ``double`` column fed to a float32 ONNX input: 1e39 would become inf (scikit-learn refuses it)."""
    dep.feed_dtypes = {"x": np.dtype(np.float32)}
    service = _service(dep)
    for value in (b"1e39", b"1e308", b"-3.5e38"):
        with pytest.raises(InvalidInput, match="does not fit the model's float32 input") as err:
            await service.predict_body("doubler", "champion", b'{"inputs": [{"x": %s, "tag": "a"}]}' % value, None)
        assert err.value.field == "x"
    with pytest.raises(InvalidInput, match="float32"):
        await service.predict_arrow("doubler", "champion", _arrow(x=[1.0, 1e39], tag=["a", "b"]))
    assert (await service.predict_records("doubler", "champion", [{"x": 3e38, "tag": "a"}])).rows == 1
    dep.feed_dtypes = {"x": np.dtype(np.int32)}
    with pytest.raises(InvalidInput, match="int32 input"):
        await service.predict_records("doubler", "champion", [{"x": 2.0**40, "tag": "a"}])


def test_feed_dtypes_follow_the_converted_layout(tmp_path: Path) -> None:
    sig = fake_deployment().signature
    matrix = ConvertedModel("onnx", "sklearn", tmp_path, input_layout="matrix", matrix_input="X",
                            input_dtypes={"X": "float32"})  # fmt: skip
    assert onnx_feed_dtypes(matrix, sig) == {"x": np.dtype(np.float32), "tag": np.dtype(np.float32)}
    cols = ConvertedModel("onnx", "sklearn", tmp_path, input_map={"x": "x_in"}, input_dtypes={"x_in": "float32"})
    assert onnx_feed_dtypes(cols, sig) == {"x": np.dtype(np.float32)}
    assert onnx_feed_dtypes(replace(cols, runtime="pyfunc"), sig) == {}


# -- parity and v2 metadata -------------------------------------------------------------------------------------------


def test_parity_shows_the_tolerances_it_applied() -> None:
    dep = fake_deployment()
    dep.converted = replace(dep.converted, parity=Parity(69, 0.0026, 1e-4, True, 1e-4))
    parity = dep.info().summary()["parity"]
    assert parity["atol"] == 1e-4 and parity["rtol"] == 1e-4 and parity["max_abs_err"] == 0.0026
    assert "rtol" in parity["rule"] and "tolerance" not in parity and parity["passed"] is True


def _onnx(path: Path, outputs: dict[str, int]) -> Path:
    nodes = [helper.make_node("Identity", ["x"], [name]) for name in outputs]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info(name, t, [None, 1]) for name, t in outputs.items()],
    )
    onnx.save(helper.make_model(graph), path)
    return path


def test_v2_metadata_says_the_datatype_the_runtime_answers(tmp_path: Path) -> None:
    """A float32 ONNX regressor of a float64 sklearn model: ``infer`` answers FP32, so must the metadata."""
    path = _onnx(tmp_path / "m.onnx", {"variable": TensorProto.FLOAT})
    converted = ConvertedModel("onnx", "sklearn", tmp_path, onnx_path=path, prediction_output="variable")
    assert onnx_output_dtypes(converted) == {"predictions": "float32"}
    dep = fake_deployment()
    dep.signature = replace(dep.signature, outputs=(ColumnSpec("y", "double"),))
    dep.converted = converted
    dep.output_dtypes = onnx_output_dtypes(converted)
    info = dep.info()
    assert info.output_dtypes == {"predictions": "float32"}
    assert model_metadata(info)["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
    pyfunc = fake_deployment()
    pyfunc.signature = dep.signature
    assert model_metadata(pyfunc.info())["outputs"][0]["datatype"] == "FP64"  # the pyfunc returns the signature's


def test_v2_metadata_of_onnx_classifiers(tmp_path: Path) -> None:
    path = _onnx(tmp_path / "c.onnx", {"label": TensorProto.INT64, "probabilities": TensorProto.FLOAT})
    converted = ConvertedModel(
        "onnx", "sklearn", tmp_path, onnx_path=path, prediction_output="probabilities", label_output="label",
        probabilities_output="probabilities", classes=(0, 1),
    )  # fmt: skip
    dep = fake_deployment()
    dep.converted, dep.output_kind = converted, OutputKind("classification", (0, 1), True)
    dep.output_dtypes = onnx_output_dtypes(converted)
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in model_metadata(dep.info())["outputs"]}
    assert outputs == {"predictions": ("FP32", [-1, 2]), "label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 2])}
    unreadable = replace(converted, onnx_path=tmp_path / "missing.onnx")
    assert onnx_output_dtypes(unreadable) == {}


def test_v2_metadata_of_pyfunc_classifiers() -> None:
    dep = fake_deployment()
    dep.signature = replace(dep.signature, outputs=(ColumnSpec("p", "double", shape=(2,)),))
    dep.output_kind = OutputKind("classification", ("no", "yes"), True)
    outputs = {o["name"]: o["datatype"] for o in model_metadata(dep.info())["outputs"]}
    assert outputs == {"predictions": "FP64", "label": "BYTES", "probabilities": "FP64"}
    dep.output_kind = OutputKind("classification", ("no", "yes"), False)
    assert [o["name"] for o in model_metadata(dep.info())["outputs"]] == ["predictions", "label"]
