"""Conversion per flavor on real MLflow models, checked against the native models on fresh rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from registry.convert import CONVERTERS, convert
from registry.model import ConvertedModel
from registry.pyfunc import load_pyfunc
from tests.registry.conftest import RegistryFixture

pytestmark = pytest.mark.integration

Converted = Callable[[str, str], tuple[Any, ConvertedModel]]


def run_onnx(conv: ConvertedModel, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Feed the ONNX model exactly as the ConvertedModel contract describes (independent of registry code)."""
    session = ort.InferenceSession(str(conv.onnx_path), providers=["CPUExecutionProvider"])
    if conv.input_layout == "matrix":
        assert conv.matrix_input is not None
        feeds = {conv.matrix_input: frame.to_numpy().astype(conv.input_dtypes[conv.matrix_input])}
    else:
        feeds = {name: frame[[col]].to_numpy().astype(conv.input_dtypes[name]) for col, name in conv.input_map.items()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def squeezed(conv: ConvertedModel, outputs: dict[str, np.ndarray]) -> np.ndarray:
    out = outputs[str(conv.prediction_output)]
    return out.reshape(-1) if conv.squeeze_prediction and out.ndim == 2 and out.shape[1] == 1 else out


def assert_converted(conv: ConvertedModel, flavor: str, layout: str) -> None:
    assert conv.runtime == "onnx", conv.reason
    assert conv.reason is None
    assert conv.flavor == flavor
    assert conv.input_layout == layout
    assert conv.onnx_path is not None and conv.onnx_path.is_file()
    assert conv.parity is not None and conv.parity.passed
    assert conv.parity.rows == 5 + 64
    assert conv.parity.max_abs_err <= 1e-3
    assert len(conv.checksum) == 64


def test_sklearn_regressor_pipeline_gets_one_input_per_column(registry: RegistryFixture, converted: Converted) -> None:
    _, conv = converted("houses", "1")
    assert_converted(conv, "sklearn", "columns")
    assert conv.input_map == {"area": "area", "rooms": "rooms", "city": "city"}
    assert conv.input_dtypes == {"area": "float32", "rooms": "int64", "city": "object"}
    assert conv.prediction_output == "variable" and conv.squeeze_prediction
    assert conv.classes is None and conv.label_output is None
    assert conv.categories == {"city": ("lyon", "nice", "paris")}
    assert conv.closed_categories == ()  # OneHotEncoder(handle_unknown="ignore") scores unknown cities

    rows = registry.rows("houses")
    got = squeezed(conv, run_onnx(conv, rows))
    np.testing.assert_allclose(got, registry.natives["houses/1"].predict(rows), rtol=1e-4, atol=1e-3)


def test_hist_gradient_boosting_converts_with_the_skl2onnx_patch(
    registry: RegistryFixture, converted: Converted
) -> None:
    _, conv = converted("houses", "2")
    assert_converted(conv, "sklearn", "columns")
    rows = registry.rows("houses")
    got = squeezed(conv, run_onnx(conv, rows))
    np.testing.assert_allclose(got, registry.natives["houses/2"].predict(rows), rtol=1e-4, atol=1e-3)


def test_sklearn_classifier_with_predict_proba_pyfunc(registry: RegistryFixture, converted: Converted) -> None:
    _, conv = converted("churn", "1")
    assert_converted(conv, "sklearn", "columns")
    assert conv.prediction_output == "probabilities" and not conv.squeeze_prediction
    assert (conv.label_output, conv.probabilities_output) == ("label", "probabilities")
    assert conv.classes == ("leave", "stay")
    assert conv.categories == {"plan": ("basic", "pro")}
    assert conv.closed_categories == ("plan",)  # OneHotEncoder() fails on an unknown plan: both doors refuse it

    rows, native = registry.rows("churn"), registry.natives["churn"]
    out = run_onnx(conv, rows)
    np.testing.assert_allclose(squeezed(conv, out), native.predict_proba(rows), atol=1e-5)
    assert out["label"].tolist() == native.predict(rows).tolist()


def test_plain_numeric_classifier_uses_the_matrix_layout(registry: RegistryFixture, converted: Converted) -> None:
    _, conv = converted("flowers", "1")
    assert_converted(conv, "sklearn", "matrix")
    assert conv.matrix_input == "input" and conv.input_dtypes == {"input": "float32"}
    assert conv.prediction_output == "label"
    assert conv.classes == (0, 1, 2)

    rows, native = registry.rows("flowers"), registry.natives["flowers"]
    out = run_onnx(conv, rows)
    assert squeezed(conv, out).tolist() == native.predict(rows).tolist()
    np.testing.assert_allclose(out["probabilities"], native.predict_proba(rows), atol=1e-5)


def test_xgboost_regressor(registry: RegistryFixture, converted: Converted) -> None:
    _, conv = converted("xgb-reg", "1")
    assert_converted(conv, "xgboost", "matrix")
    rows = registry.rows("xgb-reg")
    got = squeezed(conv, run_onnx(conv, rows))
    assert got.shape == (len(rows),)
    np.testing.assert_allclose(got, registry.natives["xgb-reg"].predict(rows), rtol=1e-4, atol=1e-4)


def test_lightgbm_classifier(registry: RegistryFixture, converted: Converted) -> None:
    _, conv = converted("lgb-clf", "1")
    assert_converted(conv, "lightgbm", "matrix")
    assert conv.prediction_output == "label" and conv.classes == (0, 1)
    rows, native = registry.rows("lgb-clf"), registry.natives["lgb-clf"]
    out = run_onnx(conv, rows)
    assert squeezed(conv, out).tolist() == native.predict(rows).tolist()
    np.testing.assert_allclose(out["probabilities"], native.predict_proba(rows), atol=1e-5)


def test_onnx_flavor_is_used_as_is(registry: RegistryFixture, converted: Converted) -> None:
    info, conv = converted("onnx-linear", "1")
    assert conv.runtime == "onnx", conv.reason
    assert conv.flavor == "onnx" and conv.parity is not None and conv.parity.passed
    assert info.signature is not None and info.signature.is_tensor
    assert conv.input_map == {"input": "X"} and conv.input_dtypes == {"X": "float32"}
    assert conv.prediction_output == "variable" and not conv.squeeze_prediction

    rows = registry.rows("onnx-linear").to_numpy(np.float32)
    session = ort.InferenceSession(str(conv.onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["variable"], {"X": rows})
    np.testing.assert_allclose(got.reshape(-1), registry.natives["onnx-linear"].predict(rows), rtol=1e-5, atol=1e-4)


def test_custom_pyfunc_falls_back_with_a_reason(converted: Converted) -> None:
    _, conv = converted("custom", "1")
    assert conv.runtime == "pyfunc"
    assert conv.onnx_path is None
    assert conv.reason == "no ONNX converter for flavors ['python_function']"
    assert conv.flavor == "python_function"


def test_unconvertible_sklearn_pipeline_falls_back_with_the_skl2onnx_error(converted: Converted) -> None:
    _, conv = converted("odd", "1")
    assert conv.runtime == "pyfunc" and conv.flavor == "sklearn" and conv.onnx_path is None
    assert conv.reason is not None and conv.reason.startswith("skl2onnx: ")
    assert "FunctionTransformer" in conv.reason and "\n" not in conv.reason


def test_second_convert_is_served_from_cache(
    client: Any, converted: Converted, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, first = converted("houses", "1")
    assert first.onnx_path is not None
    mtime = first.onnx_path.stat().st_mtime_ns

    def explode(_ctx: Any) -> Any:
        raise AssertionError("converter re-invoked")

    monkeypatch.setitem(CONVERTERS, "sklearn", explode)
    steps: list[str] = []
    again = convert(info, client.download(info, model_cache), model_cache, progress=steps.append)
    assert again.from_cache and not first.from_cache
    assert again.onnx_path == first.onnx_path and again.onnx_path.stat().st_mtime_ns == mtime
    assert again.parity == first.parity and again.categories == first.categories and again.classes is None
    assert again.input_map == first.input_map and again.input_dtypes == first.input_dtypes
    assert steps == ["using cached conversion (onnx)"]
    assert first.onnx_path.parent.parent.name == "1" and first.onnx_path.parent.name.startswith(first.checksum[:16])


def test_pyfunc_fallback_is_cached_too(client: Any, converted: Converted, model_cache: Path) -> None:
    info, first = converted("custom", "1")
    again = convert(info, client.download(info, model_cache), model_cache)
    assert again.from_cache and again.runtime == "pyfunc" and again.reason == first.reason


def test_converter_exception_falls_back_and_reports_the_tool(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from registry.uri import ModelRef

    def broken(_ctx: Any) -> Any:
        raise RuntimeError("Unable to find a shape calculator\nwith a long second line")

    monkeypatch.setitem(CONVERTERS, "xgboost", broken)
    info = client.resolve(ModelRef("xgb-reg", version="1"))
    steps: list[str] = []
    conv = convert(info, client.download(info, tmp_path), tmp_path, progress=steps.append)
    assert conv.runtime == "pyfunc"
    assert conv.reason == "onnxmltools: RuntimeError: Unable to find a shape calculator"
    assert "xgb-reg/1 will be served by pyfunc" in caplog.text
    assert steps[0] == "converting xgboost → ONNX" and steps[-1].startswith("serving with pyfunc")


def test_parity_failure_falls_back(client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter producing a plausible but wrong graph (another model's) must not be served."""
    from registry.convert.sklearn import convert_sklearn
    from registry.uri import ModelRef

    donor = client.resolve(ModelRef("houses", version="2"))
    donor_dir = client.download(donor, tmp_path)

    def wrong_model(ctx: Any) -> Any:
        return convert_sklearn(
            type(ctx)(
                donor,
                donor_dir,
                *[getattr(ctx, f) for f in ("flavor", "flavor_conf")],
                ctx.pyfunc_conf,
                ctx.signature,
                ctx.progress,
            )
        )

    monkeypatch.setitem(CONVERTERS, "sklearn", wrong_model)
    info = client.resolve(ModelRef("houses", version="1"))
    conv = convert(info, client.download(info, tmp_path), tmp_path)
    assert conv.runtime == "pyfunc"
    assert conv.reason is not None and conv.reason.startswith("parity: variable: max abs error")
    assert conv.reason.endswith("on 69 rows")
    assert conv.parity is not None and not conv.parity.passed and conv.parity.rows == 69


def test_load_pyfunc_on_column_arrays(registry: RegistryFixture, converted: Converted) -> None:
    info, conv = converted("houses", "1")
    predict = load_pyfunc(conv, info.signature)
    rows = registry.rows("houses", n=7)
    columns = {"area": rows[["area"]].to_numpy(), "rooms": rows["rooms"].to_numpy(), "city": rows["city"].to_numpy()}
    got = predict(columns)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, registry.natives["houses/1"].predict(rows), rtol=1e-9)


def test_load_pyfunc_of_a_fallback_model(converted: Converted) -> None:
    info, conv = converted("custom", "1")
    predict = load_pyfunc(conv, info.signature)
    assert predict({"x": np.array([1.0, 2.5])}).tolist() == [2.0, 5.0]


def test_load_pyfunc_with_predict_proba_and_tensor_signatures(registry: RegistryFixture, converted: Converted) -> None:
    info, conv = converted("churn", "1")
    rows = registry.rows("churn", n=5)
    proba = load_pyfunc(conv, info.signature)({c: rows[c].to_numpy() for c in rows})
    assert proba.shape == (5, 2)

    info, conv = converted("onnx-linear", "1")
    x = registry.rows("onnx-linear", n=4).to_numpy(np.float32)
    out = load_pyfunc(conv, info.signature)({"input": x})
    assert out.shape == (4, 1)
    np.testing.assert_allclose(out.reshape(-1), registry.natives["onnx-linear"].predict(x), rtol=1e-5, atol=1e-4)
