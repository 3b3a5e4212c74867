"""Errors raised by the registry layer.

RegistryError
 ├── InvalidModelURI        the string is not models:/name/version or models:/name@alias
 ├── ModelNotInRegistry     no such registered model, version or alias
 ├── UnsupportedFlavor      no converter for the model's flavors (the loader falls back to pyfunc)
 └── ConversionError        a converter failed or its output disagreed with the original model
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of every registry-layer failure."""


class InvalidModelURI(RegistryError):
    """The model URI cannot be parsed."""


class ModelNotInRegistry(RegistryError):
    """The registered model, version or alias does not exist."""


class UnsupportedFlavor(RegistryError):
    """No ONNX converter handles this model's flavors."""


class ConversionError(RegistryError):
    """Conversion to ONNX failed or did not match the original model."""
