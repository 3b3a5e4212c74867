"""Tiny real deployments for the MCP door tests: ONNX graphs built with onnx.helper, run by onnxruntime.

* ``customer_ltv@champion`` (v3): regression, lifetime value in EUR from tenure (long), monthly spend (double) and a
  categorical segment (string, categories basic/premium): ``10*tenure + 2*spend + (100 if premium)``.
* ``customer_propensity@champion`` (v1): binary classifier from age (double) and visits (long):
  ``p(1) = sigmoid(0.1*age + 0.5*visits - 5)``.

Importable by the stdio subprocess (``python -m tests.tools.stdio_server``) as well as by the fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from registry import ColumnSpec, ConvertedModel, ModelRef, ModelSignature, ModelVersionInfo
from server.decode import Decoder
from server.deployments import Deployment, DeploymentTable
from server.lifecycle.loader import onnx_feeds, onnx_outputs
from server.runtime.batcher import Batcher, BatcherConfig
from server.runtime.session import OnnxSession
from server.schema import OutputKind, build_schema
from server.service import InferenceService

MAX_TOOL_ROWS = 10
_OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]


def _const(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.DOUBLE, [], [value]))


def ltv_onnx() -> bytes:
    nodes = [
        helper.make_node("Cast", ["tenure_months"], ["t"], to=TensorProto.DOUBLE),
        helper.make_node(
            "LabelEncoder",
            ["segment"],
            ["seg_f"],
            domain="ai.onnx.ml",
            keys_strings=["basic", "premium"],
            values_floats=[0.0, 100.0],
            default_float=0.0,
        ),
        helper.make_node("Cast", ["seg_f"], ["seg"], to=TensorProto.DOUBLE),
        _const("ten", 10.0),
        _const("two", 2.0),
        helper.make_node("Mul", ["t", "ten"], ["a"]),
        helper.make_node("Mul", ["monthly_spend", "two"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "seg"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ltv",
        [
            helper.make_tensor_value_info("tenure_months", TensorProto.INT64, [None, 1]),
            helper.make_tensor_value_info("monthly_spend", TensorProto.DOUBLE, [None, 1]),
            helper.make_tensor_value_info("segment", TensorProto.STRING, [None, 1]),
        ],
        [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])],
    )
    return helper.make_model(graph, opset_imports=_OPSETS, ir_version=8).SerializeToString()


def propensity_onnx() -> bytes:
    nodes = [
        helper.make_node("Cast", ["visits"], ["v"], to=TensorProto.DOUBLE),
        _const("w_age", 0.1),
        _const("w_visits", 0.5),
        _const("bias", -5.0),
        _const("one", 1.0),
        helper.make_node("Mul", ["age", "w_age"], ["za"]),
        helper.make_node("Mul", ["v", "w_visits"], ["zv"]),
        helper.make_node("Add", ["za", "zv"], ["z0"]),
        helper.make_node("Add", ["z0", "bias"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["pd"], axis=1),
        helper.make_node("Cast", ["pd"], ["probabilities"], to=TensorProto.FLOAT),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "propensity",
        [
            helper.make_tensor_value_info("age", TensorProto.DOUBLE, [None, 1]),
            helper.make_tensor_value_info("visits", TensorProto.INT64, [None, 1]),
        ],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
    )
    return helper.make_model(graph, opset_imports=_OPSETS, ir_version=8).SerializeToString()


def _info(
    name: str,
    version: str,
    alias: str | None,
    signature: ModelSignature,
    example: list[dict[str, Any]],
    description: str,
) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=name,
        version=version,
        aliases=(alias,) if alias else (),
        source=f"models:/m-{name}{version}",
        run_id=f"run-{name}-{version}",
        experiment_id="7",
        model_description=description,
        version_description=f"Version {version}, trained on synthetic data.",
        tags={"team": "growth"},
        metrics={"rmse": 1.5, "r2": 0.9},
        params={"alpha": "0.1"},
        flavors=("python_function", "sklearn"),
        signature=signature,
        input_example=example,
    )


LTV_COLUMNS = ("tenure_months", "monthly_spend", "segment")


def ltv_deployment(
    version: str = "3",
    alias: str | None = "champion",
    *,
    name: str = "customer_ltv",
    columns: tuple[str, str, str] = LTV_COLUMNS,
    closed: bool = False,
) -> Deployment:
    """The LTV model; ``columns`` renames its three inputs (the graph keeps its own), ``closed`` makes ``segment``
    refuse unknown categories (an encoder with ``handle_unknown="error"``)."""
    tenure, spend, segment = columns
    signature = ModelSignature(
        inputs=(
            ColumnSpec(tenure, "long", description="Months since the customer signed up", unit="month"),
            ColumnSpec(spend, "double", description="Average monthly spend", unit="EUR"),
            ColumnSpec(segment, "string", optional=False, description="Customer segment"),
        ),
        output_description="the customer's expected lifetime value",
        output_unit="EUR",
    ).with_categories({segment: ("basic", "premium")}, closed=(segment,) if closed else ())
    example = [{tenure: 12, spend: 40.5, segment: "premium"}]
    converted = ConvertedModel(
        runtime="onnx",
        flavor="sklearn",
        model_dir=Path("."),
        input_map=dict(zip(columns, LTV_COLUMNS, strict=True)),
        input_dtypes={"tenure_months": "int64", "monthly_spend": "float64", "segment": "object"},
        prediction_output="variable",
        categories={segment: ("basic", "premium")},
        closed_categories=(segment,) if closed else (),
    )
    return _deployment(
        name,
        version,
        alias,
        signature,
        example,
        converted,
        ltv_onnx(),
        OutputKind("regression"),
        "Predicts a customer's lifetime value.",
    )


def propensity_deployment(version: str = "1", alias: str | None = "champion") -> Deployment:
    signature = ModelSignature(
        inputs=(
            ColumnSpec("age", "double", description="Customer age", unit="year"),
            ColumnSpec("visits", "long", description="Store visits in the last 30 days"),
        ),
        output_description="whether the customer buys in the next 30 days (1) or not (0)",
    )
    converted = ConvertedModel(
        runtime="onnx",
        flavor="sklearn",
        model_dir=Path("."),
        input_dtypes={"age": "float64", "visits": "int64"},
        prediction_output="label",
        label_output="label",
        probabilities_output="probabilities",
        classes=(0, 1),
    )
    return _deployment(
        "customer_propensity",
        version,
        alias,
        signature,
        [{"age": 35.0, "visits": 4}],
        converted,
        propensity_onnx(),
        OutputKind("classification", (0, 1)),
        "Propensity to buy within 30 days.",
    )


def _deployment(
    name: str,
    version: str,
    alias: str | None,
    signature: ModelSignature,
    example: list[dict[str, Any]],
    converted: ConvertedModel,
    model: bytes,
    kind: OutputKind,
    description: str,
) -> Deployment:
    ref = ModelRef(name, alias=alias) if alias else ModelRef(name, version=version)
    session = OnnxSession(model, providers="cpu", intra_op_threads=1)
    schema = build_schema(signature, example=example)
    batcher = Batcher(session.run, BatcherConfig(timeout_s=30.0), name=ref.uri)
    return Deployment(
        ref,
        _info(name, version, alias, signature, example, description),
        converted,
        signature,
        schema,
        kind,
        Decoder(signature),
        session,
        batcher,
        onnx_feeds(converted, signature),
        onnx_outputs(converted),
    )


def ltv_value(tenure: int, spend: float, segment: str) -> float:
    return 10.0 * tenure + 2.0 * spend + (100.0 if segment == "premium" else 0.0)


def propensity_p1(age: float, visits: int) -> float:
    return float(1.0 / (1.0 + np.exp(-(0.1 * age + 0.5 * visits - 5.0))))


async def start_service(*deployments: Deployment) -> InferenceService:
    """A service over a table holding ``deployments`` (default: the two above), batchers started."""
    table = DeploymentTable()
    for dep in deployments or (ltv_deployment(), propensity_deployment()):
        await dep.batcher.start()
        table.add(dep)
    return InferenceService(table, max_tool_rows=MAX_TOOL_ROWS)


async def stop_service(service: InferenceService) -> None:
    for dep in service.table.all():
        await dep.batcher.stop()
