"""Replica plans from settings and Databricks workload sizes; the autoscaling policy; the request counter (no Ray)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.scaleout.plan import ReplicaPlan
from server.scaleout.policy import ongoing_requests
from server.scaleout.replica import Ongoing, asgi_call
from server.settings import ScaleOutSettings


def test_plan_from_settings_and_serve_options() -> None:
    plan = ReplicaPlan.from_settings(ScaleOutSettings(min_replicas=0, max_replicas=3, num_cpus=2, num_gpus=0.25))
    config = plan.autoscaling_config()
    assert (config["min_replicas"], config["initial_replicas"], config["max_replicas"]) == (0, 1, 3)
    assert config["policy"] == {"policy_function": "server.scaleout.policy:ongoing_requests"}
    assert plan.actor_options() == {"num_cpus": 2, "num_gpus": 0.25}
    assert ReplicaPlan.from_settings(ScaleOutSettings()).actor_options() == {"num_cpus": 1.0}


@pytest.mark.parametrize(
    ("entities", "expected"),
    [
        ([("Small", False)], (1, 1)),
        ([("medium", False)], (1, 2)),
        ([("Large", True)], (0, 4)),
        ([("Large", True), ("Small", False)], (1, 4)),  # every replica serves every model: the widest range
    ],
)
def test_databricks_workload_sizes_widen_the_plan(entities: list[tuple[str, bool]], expected: tuple[int, int]) -> None:
    plan = ReplicaPlan.from_settings(ScaleOutSettings(min_replicas=0, max_replicas=1)).widened(entities)
    assert (plan.min_replicas, plan.max_replicas) == expected


def _ctx(replicas: int, ongoing: list[float], handles: float = 0.0) -> Any:
    return SimpleNamespace(
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        aggregated_metrics={"ongoing": {f"r{i}": v for i, v in enumerate(ongoing)}},
        total_num_requests=handles,
        config=SimpleNamespace(get_target_ongoing_requests=lambda: 32.0),
    )


def test_policy_asks_for_reported_load_over_target() -> None:
    assert ongoing_requests(_ctx(1, [64.0]))[0] == 2.0
    assert ongoing_requests(_ctx(2, [10.0, 6.0]))[0] == 0.5
    assert ongoing_requests(_ctx(1, [0.0], handles=32.0))[0] == 1.0  # requests held by the driver count too
    assert ongoing_requests(_ctx(0, []))[0] == 0  # from zero: Serve's cold start decides


@pytest.mark.anyio
async def test_ongoing_counts_http_requests_in_progress() -> None:
    seen: list[int] = []
    counter: Ongoing

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(counter.requests)
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x", b"1")]})
        await send({"type": "http.response.body", "body": body[::-1]})

    counter = Ongoing(app)
    status, headers, body = await asgi_call(counter, "POST", "/p?q=1", [], b"abc")
    assert (status, headers, body) == (201, [(b"x", b"1")], b"cba")
    assert seen == [1] and counter.requests == 0 and counter.total == 1


def test_serve_flags_set_the_replica_range_and_the_ingress() -> None:
    from server.cli import parser, settings_from

    args = parser().parse_args(
        ["serve", "models:/m/1", "--ray", "--min-replicas", "0", "--max-replicas", "3", "--ingress", "direct"]
    )
    scaleout = settings_from(args).scaleout
    assert (scaleout.min_replicas, scaleout.max_replicas, scaleout.ingress) == (0, 3, "direct")
    assert settings_from(parser().parse_args(["serve", "models:/m/1", "--ray"])).scaleout.ingress == "front"


def test_a_deployment_with_its_own_range_is_read_from_the_config_file(tmp_path: Path) -> None:
    from server.settings import load_settings

    config = tmp_path / "modelport.yaml"
    config.write_text(
        "deployments:\n"
        "  - model: models:/churn@champion\n"
        "    scaleout: {min_replicas: 0, max_replicas: 4, num_gpus: 0.25}\n"
        "  - model: models:/ltv@champion\n"
    )
    specs = load_settings(config).all_deployments()
    assert specs[0].scaleout is not None and specs[1].scaleout is None
    plan = ReplicaPlan.from_settings(specs[0].scaleout)
    assert (plan.min_replicas, plan.max_replicas, plan.actor_options()) == (0, 4, {"num_cpus": 1.0, "num_gpus": 0.25})
