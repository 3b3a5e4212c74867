"""ONNX (``mlflow.onnx``) models: the logged ``.onnx`` is served as is.

Signature columns (or tensors) map to ONNX inputs by name (``columns`` layout); a single tensor signature feeds
a single-input graph whatever the names. A single ONNX input fed from
several scalar columns gets the ``matrix`` layout, mirroring what the flavor's pyfunc does with a DataFrame
(``DataFrame.values``). The prediction is the first graph output; like the flavor's pyfunc it is flattened for
DataFrame (column) signatures and kept as is for tensor signatures.
"""

from __future__ import annotations

from typing import Any

from registry.convert.base import NUMERIC_TYPES, Conversion, ConvertContext, classifier_outputs
from registry.errors import ConversionError

TOOL = "onnx"


def convert_onnx(ctx: ConvertContext) -> Conversion:
    """Wrap the logged ONNX graph; raises when its inputs cannot be fed from the signature."""
    import onnx

    path = ctx.model_dir / str(ctx.flavor_conf.get("data") or "model.onnx")
    if not path.is_file():
        raise ConversionError(f"{TOOL}: logged model file {path.name!r} is missing")
    onx = onnx.load(str(path))
    initializers = {i.name for i in onx.graph.initializer}
    inputs = [i for i in onx.graph.input if i.name not in initializers]
    dtypes = {i.name: _numpy_dtype(i) for i in inputs}
    names = [i.name for i in inputs]
    outputs = [o.name for o in onx.graph.output]
    if not outputs:
        raise ConversionError(f"{TOOL}: the graph has no outputs")
    signature = ctx.signature
    squeeze = signature is None or not signature.is_tensor
    if signature is None or set(names) <= set(signature.input_names):
        conv = Conversion(onx, "columns", outputs[0], input_map={n: n for n in names}, input_dtypes=dtypes)
    elif len(names) == 1 and signature.is_tensor and len(signature.inputs) == 1:
        # an unnamed tensor signature ("input") feeding the graph's only input, as the pyfunc does with an array
        column = signature.inputs[0].name
        conv = Conversion(onx, "columns", outputs[0], input_map={column: names[0]}, input_dtypes=dtypes)
    elif (
        len(names) == 1
        and not signature.is_tensor
        and all(c.type in NUMERIC_TYPES and not c.shape for c in signature.inputs)
    ):
        conv = Conversion(onx, "matrix", outputs[0], matrix_input=names[0], input_dtypes=dtypes)
    else:
        raise ConversionError(f"{TOOL}: signature columns {signature.input_names} cannot feed the ONNX inputs {names}")
    conv.squeeze_prediction = squeeze
    pair = classifier_outputs(outputs)
    if pair is not None:
        conv.label_output, conv.probabilities_output = pair
    return conv


def _numpy_dtype(value_info: Any) -> str:
    from onnx import TensorProto, helper

    elem = value_info.type.tensor_type.elem_type
    if not value_info.type.HasField("tensor_type") or elem == TensorProto.UNDEFINED:
        raise ConversionError(f"{TOOL}: input {value_info.name!r} is not a typed tensor")
    if elem == TensorProto.STRING:
        return "object"
    return str(helper.tensor_dtype_to_np_dtype(elem))
