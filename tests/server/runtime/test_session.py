from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

from server.runtime import session as session_module
from server.runtime.providers import CPU, CUDA
from server.runtime.session import InputInfo, OnnxSession, PyfuncSession, Session, _as_array, _cpu_placement_reason
from tests.server.runtime.fakes import LABELS, MATMUL_W, add_model, label_encoder_model, matmul_model, scaler_model


def test_add_model_runs_on_cpu_with_metadata() -> None:
    sess = OnnxSession(add_model(), providers="cpu")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = sess.run({"x": x})
    np.testing.assert_array_equal(out["y"], x + np.array([1, 2, 3], np.float32))
    assert sess.provider == CPU
    assert sess.placement_reason == "CUDA not requested"
    assert sess.inputs == {"x": InputInfo("x", np.dtype(np.float32), ["batch", 3], "tensor(float)")}
    assert sess.input_names == ["x"]
    assert sess.output_names == ["y"]
    assert isinstance(sess, Session)


def test_matmul_model_from_path_with_auto_providers(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(matmul_model())
    sess = OnnxSession(path, intra_op_threads=1)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(sess.run({"x": x})["y"], x @ MATMUL_W, rtol=1e-6)
    assert sess.inputs["x"].shape[1] == 3
    assert sess.inputs["x"].shape[0] is None or isinstance(sess.inputs["x"].shape[0], str)
    assert sess.provider in (CPU, CUDA)


def test_string_input_model() -> None:
    sess = OnnxSession(label_encoder_model())
    assert sess.inputs["color"].dtype == np.dtype(object)
    assert sess.inputs["color"].onnx_type == "tensor(string)"
    out = sess.run({"color": np.array(["blue", "red", "purple"], dtype=object)})
    assert out["code"].tolist() == [LABELS["blue"], LABELS["red"], -1]


def test_ml_graph_placed_on_cpu_even_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "select_providers", lambda preference: [CUDA, CPU])
    sess = OnnxSession(scaler_model())
    assert sess.provider == CPU
    assert "Scaler" in sess.placement_reason
    np.testing.assert_allclose(sess.run({"x": np.ones((2, 3), np.float32)})["s"], np.zeros((2, 3)))

    strings = OnnxSession(label_encoder_model())
    assert strings.provider == CPU
    assert "string" in strings.placement_reason


def test_cpu_placement_rules() -> None:
    def reason(model: bytes) -> str | None:
        return _cpu_placement_reason(onnx.load_model_from_string(model))

    assert reason(add_model()) is None
    assert reason(matmul_model()) is None
    assert "Scaler" in (reason(scaler_model()) or "")
    assert reason(scaler_model(with_matmul=True)) is None  # heavy math outweighs a preprocessing op
    assert "['color']" in (reason(label_encoder_model()) or "")


def test_concurrent_runs_from_threads() -> None:
    sess = OnnxSession(matmul_model(), providers="cpu")
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in rng.integers(1, 64, size=64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(lambda x: sess.run({"x": x})["y"], inputs))
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(y, x @ MATMUL_W, rtol=1e-5)


def test_pyfunc_session() -> None:
    sess = PyfuncSession(
        lambda feeds: {"y": feeds["a"] + feeds["b"], "extra": [1, 2]},
        input_names=["a", "b"],
        output_names=["y"],
        placement_reason="conversion failed",
    )
    out = sess.run({"a": np.ones(2), "b": np.ones(2)})
    assert out.keys() == {"y"}
    np.testing.assert_array_equal(out["y"], [2.0, 2.0])
    assert sess.provider == "python"
    assert isinstance(sess, Session)
    missing = PyfuncSession(lambda feeds: {}, input_names=["a"], output_names=["y"])
    with pytest.raises(KeyError):
        missing.run({"a": np.ones(1)})


def test_non_tensor_outputs_become_object_arrays() -> None:
    zipmap = _as_array([{"a": 0.1}, {"a": 0.9}])
    assert zipmap.dtype == object and zipmap.shape == (2,)
    assert zipmap[1] == {"a": 0.9}
    assert _as_array([1, 2]).tolist() == [1, 2]
