"""What runs as which Serve application (no Ray): the general unit, a unit per model with its own ``scaleout`` and per
persisted Databricks endpoint behind the front (read from a real sqlite store), the general unit alone and widened
with ``ingress: direct``; the replica plans of endpoints' workload sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.databricks.config import parse_config
from server.databricks.endpoint import Endpoint
from server.databricks.store import EndpointStore
from server.scaleout.plan import ReplicaPlan
from server.scaleout.units import GENERAL, Unit, units
from server.settings import DeploymentSpec, ReplicaRange, ScaleOutSettings, Settings


def endpoint_record(name: str, *entities: tuple[str, bool]) -> dict[str, Any]:
    """What ``EndpointService`` persists for an endpoint serving these ``(workload_size, scale_to_zero)`` entities."""
    config = parse_config(
        {
            "served_entities": [
                {"entity_name": f"m{i}", "entity_version": "1", "workload_size": size, "scale_to_zero_enabled": zero}
                for i, (size, zero) in enumerate(entities)
            ]
        }
    )
    return Endpoint(name, f"id-{name}", 1, 1, config=config).record()


def save(settings: Settings, name: str, *entities: tuple[str, bool]) -> None:
    store = EndpointStore(settings.endpoints_db)
    try:
        store.save(name, endpoint_record(name, *entities))
    finally:
        store.close()


ENDPOINTS = {  # name → its entities, and the replica range they ask for
    "a-small": ([("Small", False)], (1, 1)),
    "b-medium": ([("Medium", False)], (1, 2)),
    "c-large": ([("Large", False)], (1, 4)),
    "d-zero": ([("Small", True), ("Large", True)], (0, 4)),  # every entity scales to zero
    "e-mixed": ([("Large", True), ("Small", False)], (1, 4)),  # one does not: no 0
}
OWN = DeploymentSpec(model="models:/my model@champion", scaleout=ReplicaRange(min_replicas=0, max_replicas=3))
ODD = DeploymentSpec(model="models:/a?b%/7", scaleout=ReplicaRange(max_replicas=2, num_gpus=0.5))
PLAIN = DeploymentSpec(model="models:/plain/2")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Models with and without their own range, and persisted endpoints; a state directory relative to the cwd."""
    monkeypatch.chdir(tmp_path)
    made = Settings(
        state_dir=Path("state"),
        deployments=(OWN, PLAIN, ODD),
        models=("models:/other/1",),
        scaleout=ScaleOutSettings(min_replicas=1, max_replicas=2, num_cpus=2, upscale_delay_s=7),
    )
    for name, (entities, _) in ENDPOINTS.items():
        save(made, name, *entities)
    return made


def _range(unit: Unit) -> tuple[int, int]:
    return unit.plan.min_replicas, unit.plan.max_replicas


def test_behind_the_front_models_with_a_range_and_endpoints_get_units_of_their_own(
    settings: Settings, tmp_path: Path
) -> None:
    general, own, odd, *endpoints = units(settings, "mp")

    assert (general.app, general.backend, general.routes, general.endpoints, general.endpoint) == (
        "mp", GENERAL, (), None, None
    )  # fmt: skip
    assert general.plan == ReplicaPlan.from_settings(settings.scaleout)  # not widened: endpoints have their own
    assert general.settings.all_deployments() == settings.all_deployments()  # it serves every model

    assert (own.app, own.backend, own.routes, own.endpoints, own.endpoint) == (
        "mp-1-my model", "model_1", ("/model/my%20model/champion/",), (), None
    )  # fmt: skip
    assert own.settings.all_deployments() == [OWN] and _range(own) == (0, 3)
    assert (odd.app, odd.backend, odd.routes) == ("mp-2-a?b%", "model_2", ("/model/a%3Fb%25/7/",))
    assert odd.settings.all_deployments() == [ODD] and odd.plan.num_gpus == 0.5

    assert [u.app for u in endpoints] == [f"mp-endpoint-{name}" for name in ENDPOINTS]  # by name
    for i, (unit, (name, (entities, expected))) in enumerate(zip(endpoints, ENDPOINTS.items(), strict=True), 1):
        assert unit.backend == f"endpoint_{i}"
        assert (unit.routes, unit.endpoints, unit.endpoint) == ((f"/serving-endpoints/{name}/",), (name,), name)
        assert unit.plan == ReplicaPlan.for_entities(settings.scaleout, entities)
        assert _range(unit) == expected, name
        assert unit.settings.all_deployments() == []  # it restores its endpoint alone
        assert unit.plan.num_cpus == 2 and unit.plan.upscale_delay_s == 7  # the rest from the settings

    for unit in (general, own, odd, *endpoints):  # Ray workers have their own cwd
        assert unit.settings.state_dir == tmp_path / "state" and unit.settings.state_dir.is_absolute()
        assert unit.settings.intra_op_threads == int(unit.plan.num_cpus)
        assert unit.settings.endpoints_db.resolve() == settings.endpoints_db.resolve()  # one shared store


def test_with_ingress_direct_the_general_unit_serves_all_widened_to_the_endpoints(settings: Settings) -> None:
    direct = settings.model_copy(update={"scaleout": settings.scaleout.model_copy(update={"ingress": "direct"})})
    (general,) = units(direct, "mp")
    assert (general.app, general.backend, general.routes, general.endpoints) == ("mp", GENERAL, (), None)
    assert _range(general) == (1, 4)  # Large widens the maximum; the settings' minimum 1 stays
    assert general.settings.all_deployments() == settings.all_deployments()
    assert general.settings.state_dir.is_absolute()


@pytest.mark.parametrize(
    ("minimum", "entities", "expected"),
    [
        (0, [("Small", True), ("Large", True)], (0, 4)),  # every entity and the settings allow zero
        (0, [("Large", True), ("Small", False)], (1, 4)),
        (0, [("Small", False), ("Large", True)], (1, 4)),  # whatever the order
        (1, [("Large", True)], (1, 4)),  # the settings do not allow zero
        (2, [("Medium", False)], (2, 2)),
        (0, [], (0, 1)),
    ],
)
def test_direct_widening_takes_the_widest_range(
    tmp_path: Path, minimum: int, entities: list[tuple[str, bool]], expected: tuple[int, int]
) -> None:
    settings = Settings(state_dir=tmp_path, scaleout=ScaleOutSettings(ingress="direct", min_replicas=minimum))
    if entities:
        save(settings, "ep", *entities)
    (general,) = units(settings, "mp")
    assert _range(general) == expected
    assert ReplicaPlan.from_settings(settings.scaleout).widened(entities) == general.plan


def test_without_endpoints_or_models_only_the_general_unit_and_no_store_is_created(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    (general,) = units(settings, "modelport")
    assert (general.app, general.backend, _range(general)) == ("modelport", GENERAL, (1, 1))
    assert not settings.endpoints_db.exists()


BASE = ScaleOutSettings(
    min_replicas=0, max_replicas=5, num_cpus=0.5, num_gpus=0.25, target_ongoing_requests=8,
    upscale_delay_s=1, downscale_delay_s=2, graceful_shutdown_s=3,
)  # fmt: skip


@pytest.mark.parametrize(
    ("entities", "expected"),
    [
        ([], (1, 1)),  # no entity (a record without config): one replica, not the settings' range
        ([("Huge", False)], (1, 1)),  # an unknown size: as Small
        ([("Huge", True)], (0, 1)),
        ([("large", False)], (1, 4)),  # sizes in any case
        ([("MEDIUM", True)], (0, 2)),
        ([("Small", False), ("Medium", True)], (1, 2)),
    ],
)
def test_an_endpoint_s_plan_is_its_entities_range_with_the_base_s_resources(
    entities: list[tuple[str, bool]], expected: tuple[int, int]
) -> None:
    plan = ReplicaPlan.for_entities(BASE, entities)
    assert (plan.min_replicas, plan.max_replicas) == expected
    assert (plan.num_cpus, plan.num_gpus, plan.target_ongoing_requests) == (0.5, 0.25, 8)
    assert (plan.upscale_delay_s, plan.downscale_delay_s, plan.graceful_shutdown_s) == (1, 2, 3)
    assert ReplicaPlan.for_entities(BASE, iter(entities)) == plan  # any iterable, read once


def test_per_model_gives_every_model_a_unit_with_its_own_range_or_the_settings(tmp_path: Path) -> None:
    own = DeploymentSpec(model="models:/churn@champion", scaleout=ReplicaRange(min_replicas=0, max_replicas=3))
    settings = Settings(
        state_dir=tmp_path, deployments=(own,), models=("models:/ltv/2",),
        scaleout=ScaleOutSettings(per_model=True, min_replicas=1, max_replicas=2),
    )  # fmt: skip
    general, churn, ltv = units(settings, "mp")
    assert general.backend == GENERAL and general.settings.all_deployments() == settings.all_deployments()
    assert (churn.app, churn.routes, _range(churn)) == ("mp-1-churn", ("/model/churn/champion/",), (0, 3))
    assert (ltv.app, ltv.routes, _range(ltv)) == ("mp-2-ltv", ("/model/ltv/2/",), (1, 2))  # the settings' range
    assert [s.model for s in ltv.settings.all_deployments()] == ["models:/ltv/2"]
