"""MLflow Model Registry access and ONNX conversion. Knows nothing about serving."""

from __future__ import annotations

from registry.errors import ConversionError, InvalidModelURI, ModelNotInRegistry, RegistryError, UnsupportedFlavor
from registry.model import ConvertedModel, ModelVersionInfo, Parity, PyfuncPredict, RegisteredModelSummary
from registry.signature import ColumnSpec, ModelSignature, ParamSpec
from registry.uri import ModelRef

__all__ = [
    "ColumnSpec",
    "ConversionError",
    "ConvertedModel",
    "InvalidModelURI",
    "ModelNotInRegistry",
    "ModelRef",
    "ModelSignature",
    "ModelVersionInfo",
    "ParamSpec",
    "Parity",
    "PyfuncPredict",
    "RegisteredModelSummary",
    "RegistryError",
    "UnsupportedFlavor",
]
