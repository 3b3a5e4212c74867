from __future__ import annotations

import numpy as np
import pytest

from server.runtime.batch import rows, shape_key, split, stack


def test_stack_split_round_trip_with_strings() -> None:
    a = {"x": np.ones((2, 3), np.float32), "s": np.array(["a", "b"], dtype=object)}
    b = {"x": np.zeros((1, 3), np.float32), "s": np.array(["c"], dtype=object)}
    c = {"x": np.full((3, 3), 7, np.float32), "s": np.array(["d", "e", "f"], dtype=object)}

    feeds, offsets = stack([a, b, c])

    assert offsets == [0, 2, 3, 6]
    assert feeds["x"].shape == (6, 3)
    assert feeds["s"].dtype == object
    assert feeds["s"].tolist() == ["a", "b", "c", "d", "e", "f"]
    parts = split(feeds, offsets)
    assert len(parts) == 3
    for part, original in zip(parts, [a, b, c], strict=True):
        assert part.keys() == original.keys()
        np.testing.assert_array_equal(part["x"], original["x"])
        assert part["s"].tolist() == original["s"].tolist()


def test_stack_single_request_is_not_copied() -> None:
    x = np.ones((4, 2))
    feeds, offsets = stack([{"x": x}])
    assert feeds["x"] is x
    assert offsets == [0, 4]
    assert split({"y": x}, offsets)[0]["y"] is x


def test_stack_rejects_different_inputs_and_empty() -> None:
    with pytest.raises(ValueError, match="different inputs"):
        stack([{"x": np.ones((1, 2))}, {"z": np.ones((1, 2))}])
    with pytest.raises(ValueError, match="nothing"):
        stack([])


def test_shape_key_separates_dtype_width_and_names_but_not_rows() -> None:
    base = shape_key({"x": np.ones((1, 3), np.float32)})
    assert shape_key({"x": np.ones((50, 3), np.float32)}) == base
    assert shape_key({"x": np.ones((1, 3), np.float64)}) != base
    assert shape_key({"x": np.ones((1, 4), np.float32)}) != base
    assert shape_key({"z": np.ones((1, 3), np.float32)}) != base
    assert shape_key({"a": np.ones(2), "b": np.ones(2)}) == shape_key({"b": np.ones(2), "a": np.ones(2)})


def test_rows() -> None:
    assert rows({"a": np.ones((5, 2)), "b": np.array(["x"] * 5, dtype=object)}) == 5
    with pytest.raises(ValueError, match="disagree"):
        rows({"a": np.ones((5, 2)), "b": np.ones(4)})
    with pytest.raises(ValueError, match="leading row dimension"):
        rows({"a": np.array(1.0)})
    with pytest.raises(ValueError, match="at least one input"):
        rows({})


def test_split_checks_every_output_row_count() -> None:
    offsets = [0, 1, 3]
    with pytest.raises(ValueError, match="'bad' has 2 rows but the batch has 3"):
        split({"good": np.ones(3), "bad": np.ones(2)}, offsets)
    with pytest.raises(ValueError, match="'scalar' has no row dimension"):
        split({"scalar": np.array(1.0)}, offsets)
