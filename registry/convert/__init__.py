"""Convert a downloaded MLflow model version to ONNX, or decide (and say why) that pyfunc must serve it.

``convert`` picks a converter by flavor (:data:`CONVERTERS`, tried in :data:`FLAVOR_ORDER`), checks the ONNX
model against the original pyfunc (:mod:`registry.convert.parity`) and caches the outcome
(:mod:`registry.convert.cache`). Any converter exception, unsupported flavor or parity failure yields
``runtime="pyfunc"`` with ``reason`` set and a WARNING log: never silently wrong numbers.

Converters are imported lazily: skl2onnx/onnxmltools are slow to import and only needed on a cache miss.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from registry.convert import cache
from registry.convert.base import Conversion, ConvertContext, first_line
from registry.convert.parity import GENERATED_ROWS, check_parity
from registry.errors import ConversionError, UnsupportedFlavor
from registry.model import ConvertedModel, ModelVersionInfo, Parity
from registry.signature import ModelSignature

logger = logging.getLogger(__name__)

Converter = Callable[[ConvertContext], Conversion]


def _sklearn(ctx: ConvertContext) -> Conversion:
    from registry.convert.sklearn import convert_sklearn

    return convert_sklearn(ctx)


def _xgboost(ctx: ConvertContext) -> Conversion:
    from registry.convert.boosters import convert_xgboost

    return convert_xgboost(ctx)


def _lightgbm(ctx: ConvertContext) -> Conversion:
    from registry.convert.boosters import convert_lightgbm

    return convert_lightgbm(ctx)


def _onnx(ctx: ConvertContext) -> Conversion:
    from registry.convert.onnx_flavor import convert_onnx

    return convert_onnx(ctx)


#: MLmodel flavor -> converter. Tests and extensions may add entries.
CONVERTERS: dict[str, Converter] = {"onnx": _onnx, "xgboost": _xgboost, "lightgbm": _lightgbm, "sklearn": _sklearn}
#: Flavor preference when a model has several (a native ONNX model wins over re-converting).
FLAVOR_ORDER: tuple[str, ...] = ("onnx", "xgboost", "lightgbm", "sklearn")
#: Prefix of ``reason`` per flavor, naming the tool that failed.
TOOLS = {"onnx": "onnx", "xgboost": "onnxmltools", "lightgbm": "onnxmltools", "sklearn": "skl2onnx"}


def convert(
    info: ModelVersionInfo,
    model_dir: Path,
    cache_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> ConvertedModel:
    """Convert (or fetch from cache) one model version.

    Args:
        info: The resolved version (signature and input example drive input typing and parity rows).
        model_dir: Local MLflow model directory (``RegistryClient.download``).
        cache_dir: Root of the conversion cache (see :mod:`registry.convert.cache`).
        progress: Called with short human-readable steps ("converting sklearn → ONNX", ...).

    Returns:
        ``runtime="onnx"`` with a parity-checked ``model.onnx``, or ``runtime="pyfunc"`` with ``reason``.
    """
    say = progress or (lambda _msg: None)
    model_dir = Path(model_dir)
    checksum = cache.artifact_checksum(model_dir)
    entry = cache.entry_dir(Path(cache_dir), info.name, info.version, checksum)
    cached = cache.load(entry, model_dir)
    if cached is not None:
        say(f"using cached conversion ({cached.runtime})")
        return cached

    from mlflow.models import Model

    mlmodel = Model.load(str(model_dir / "MLmodel"))
    flavors = [f for f in mlmodel.flavors if f != "python_function"]
    flavor = next((f for f in FLAVOR_ORDER if f in mlmodel.flavors and f in CONVERTERS), None)
    flavor = flavor or next((f for f in mlmodel.flavors if f in CONVERTERS), None)
    label = flavor or (flavors[0] if flavors else "python_function")
    signature = info.signature
    if signature is None and mlmodel.signature is not None:
        signature = ModelSignature.from_mlflow(mlmodel.signature, mlmodel.metadata)
    staging = cache.staging_dir(entry)
    parity: Parity | None = None
    try:
        if flavor is None:
            raise UnsupportedFlavor(f"no ONNX converter for flavors {list(mlmodel.flavors)}")
        ctx = ConvertContext(
            info,
            model_dir,
            flavor,
            mlmodel.flavors[flavor],
            mlmodel.flavors.get("python_function", {}),
            signature,
            say,
        )
        say(f"converting {flavor} → ONNX")
        candidate, conv = _run_converter(ctx, checksum, staging)
        say(f"parity check {len(info.input_example or []) + GENERATED_ROWS} rows")
        parity, detail = check_parity(
            candidate, signature, info.input_example, categories=conv.sample_categories, reference=conv.reference
        )
        if not parity.passed:
            raise ConversionError(f"parity: {detail}")
        result = replace(candidate, parity=parity)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ConversionError | UnsupportedFlavor) else _reason(flavor, exc)
        logger.warning("%s will be served by pyfunc: %s", info.key, reason)
        (staging / "model.onnx").unlink(missing_ok=True)
        result = ConvertedModel(
            runtime="pyfunc", flavor=label, model_dir=model_dir, reason=reason, parity=parity, checksum=checksum
        )
    try:
        committed = cache.commit(staging, entry, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say("ready" if committed.runtime == "onnx" else f"serving with pyfunc: {committed.reason}")
    return committed


def _run_converter(ctx: ConvertContext, checksum: str, staging: Path) -> tuple[ConvertedModel, Conversion]:
    conv = CONVERTERS[ctx.flavor](ctx)
    onnx_path = staging / "model.onnx"
    onnx_path.write_bytes(conv.onnx_model.SerializeToString())
    converted = ConvertedModel(
        runtime="onnx",
        flavor=ctx.flavor,
        model_dir=ctx.model_dir,
        onnx_path=onnx_path,
        input_layout=conv.input_layout,
        input_map=dict(conv.input_map),
        matrix_input=conv.matrix_input,
        input_dtypes=dict(conv.input_dtypes),
        prediction_output=conv.prediction_output,
        squeeze_prediction=conv.squeeze_prediction,
        label_output=conv.label_output,
        probabilities_output=conv.probabilities_output,
        classes=conv.classes,
        categories=dict(conv.categories),
        closed_categories=conv.closed_categories,
        checksum=checksum,
    )
    return converted, conv


def _reason(flavor: str | None, exc: BaseException) -> str:
    tool = TOOLS.get(flavor or "", flavor or "convert")
    return f"{tool}: {type(exc).__name__}: {first_line(exc)}"
