"""Conversion cache: layout, JSON round trip, atomic commit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from registry.convert import cache
from registry.model import ConvertedModel, Parity


def make_model_dir(root: Path, payload: bytes = b"weights") -> Path:
    model_dir = root / "artifacts"
    model_dir.mkdir(parents=True)
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    (model_dir / "model.pkl").write_bytes(payload)
    return model_dir


def test_checksum_covers_names_and_bytes(tmp_path: Path) -> None:
    a = cache.artifact_checksum(make_model_dir(tmp_path / "a"))
    b = cache.artifact_checksum(make_model_dir(tmp_path / "b", b"other weights"))
    assert len(a) == 64 and a != b
    assert a == cache.artifact_checksum(make_model_dir(tmp_path / "c"))


def test_entry_dir_layout_and_safe_names(tmp_path: Path) -> None:
    entry = cache.entry_dir(tmp_path, "houses", "3", "ab" * 32)
    assert entry == tmp_path / "houses" / "3" / f"{'ab' * 8}-c{cache.CONVERTER_VERSION}"
    odd = cache.version_dir(tmp_path, "team/model name", "1")
    assert odd.parent.parent == tmp_path and odd.parent.name.startswith("team_model_name-")
    assert cache.version_dir(tmp_path, "..", "1").parent.name != ".."


def test_round_trip_and_from_cache(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    entry = cache.entry_dir(tmp_path, "m", "1", "0" * 64)
    staging = cache.staging_dir(entry)
    (staging / "model.onnx").write_bytes(b"onnx")
    original = ConvertedModel(
        runtime="onnx",
        flavor="sklearn",
        model_dir=model_dir,
        onnx_path=staging / "model.onnx",
        input_map={"city": "city"},
        input_dtypes={"city": "object"},
        prediction_output="label",
        squeeze_prediction=False,
        label_output="label",
        probabilities_output="probabilities",
        classes=("a", "b"),
        categories={"city": ("lyon", "paris")},
        closed_categories=("city",),
        parity=Parity(69, 1e-6, 1e-4, True),
        checksum="0" * 64,
    )
    committed = cache.commit(staging, entry, original)
    assert committed == replace(original, onnx_path=entry / "model.onnx")
    assert not staging.exists()
    loaded = cache.load(entry, model_dir)
    assert loaded == replace(committed, from_cache=True)


def test_fallback_round_trip_and_broken_entries(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    entry = cache.entry_dir(tmp_path, "m", "1", "1" * 64)
    fallback = ConvertedModel(
        "pyfunc", "python_function", model_dir, reason="no ONNX converter", parity=Parity(0, float("inf"), 1e-4, False)
    )
    cache.commit(cache.staging_dir(entry), entry, fallback)
    loaded = cache.load(entry, model_dir)
    assert loaded is not None and loaded.reason == "no ONNX converter" and loaded.parity == fallback.parity

    (entry / "converted.json").write_text("{not json")
    assert cache.load(entry, model_dir) is None


def test_onnx_entry_without_its_file_is_a_miss(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    entry = cache.entry_dir(tmp_path, "m", "1", "2" * 64)
    staging = cache.staging_dir(entry)
    (staging / "model.onnx").write_bytes(b"onnx")
    cache.commit(staging, entry, ConvertedModel("onnx", "sklearn", model_dir, onnx_path=staging / "model.onnx"))
    (entry / "model.onnx").unlink()
    assert cache.load(entry, model_dir) is None


def test_concurrent_commit_keeps_the_first(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    entry = cache.entry_dir(tmp_path, "m", "1", "3" * 64)
    late_staging = cache.staging_dir(entry)  # started converting, then someone else finished first
    first = cache.commit(cache.staging_dir(entry), entry, ConvertedModel("pyfunc", "x", model_dir, reason="first"))
    result = cache.commit(late_staging, entry, ConvertedModel("pyfunc", "x", model_dir, reason="second"))
    assert result.reason == first.reason == "first" and not result.from_cache
    assert not late_staging.exists()
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]
