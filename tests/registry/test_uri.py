"""ModelRef parsing and rendering."""

from __future__ import annotations

import pytest

from registry.errors import InvalidModelURI
from registry.uri import ModelRef


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/houses/3", ModelRef("houses", version="3")),
        ("models:/houses@champion", ModelRef("houses", alias="champion")),
        ("  models:/my-model_2@prod-eu  ", ModelRef("my-model_2", alias="prod-eu")),
        ("models:/a.b/10", ModelRef("a.b", version="10")),
    ],
)
def test_parse(uri: str, ref: ModelRef) -> None:
    assert ModelRef.parse(uri) == ref
    assert ModelRef.parse(ref.uri) == ref
    assert str(ref) == ref.uri


@pytest.mark.parametrize(
    "uri",
    ["houses/3", "models:/houses", "models:/houses/", "models:/houses/v3", "models:/houses@", "runs:/abc/model", ""],
)
def test_parse_rejects(uri: str) -> None:
    with pytest.raises(InvalidModelURI) as err:
        ModelRef.parse(uri)
    assert "models:/<name>/<version>" in str(err.value)


def test_needs_exactly_one_of_version_or_alias() -> None:
    with pytest.raises(InvalidModelURI):
        ModelRef("houses")
    with pytest.raises(InvalidModelURI):
        ModelRef("houses", version="1", alias="champion")


def test_from_path_segments() -> None:
    assert ModelRef.from_path("houses", "7") == ModelRef("houses", version="7")
    assert ModelRef.from_path("houses", "champion") == ModelRef("houses", alias="champion")
    assert ModelRef.from_path("houses", "@champion") == ModelRef("houses", alias="champion")
    assert ModelRef("houses", version="7").uri == "models:/houses/7"
    assert ModelRef("houses", alias="champion").uri == "models:/houses@champion"
