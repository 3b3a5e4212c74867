"""DeploymentTable lookups: exact deployed refs win; aliases never resolve to a possibly stale version."""

from __future__ import annotations

from dataclasses import replace

import pytest

from server.deployments import DeploymentTable
from server.errors import ModelNotFound
from tests.server.fakes import fake_deployment


def test_version_and_followed_alias_resolve() -> None:
    table = DeploymentTable()
    champion = fake_deployment(alias="champion", version="3")
    pinned = fake_deployment(alias=None, version="1")
    table.add(champion)
    table.add(pinned)
    assert table.find("doubler", "champion") is champion
    assert table.find("doubler", "@champion") is champion
    assert table.find("doubler", "3") is champion
    assert table.find("doubler", "1") is pinned
    with pytest.raises(ModelNotFound, match="several deployments"):
        table.find("doubler")


def test_an_alias_the_version_had_at_load_time_does_not_answer() -> None:
    """models:/doubler/1 loaded while @staging pointed at it; @staging may have moved since: 404, not version 1."""
    table = DeploymentTable()
    dep = fake_deployment(alias=None, version="1")
    dep.model = replace(dep.model, aliases=("staging",))
    table.add(dep)
    with pytest.raises(ModelNotFound) as err:
        table.find("doubler", "staging")
    assert err.value.field == "version" and "'staging'" in err.value.message


def test_unknown_model_names_what_is_served() -> None:
    table = DeploymentTable()
    table.add(fake_deployment())
    with pytest.raises(ModelNotFound, match=r"served models: \['doubler'\]"):
        table.find("tripler", "1")
