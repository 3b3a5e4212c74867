"""Read-only access to an MLflow Model Registry: resolve references, list models, download artifacts.

Everything goes through one ``mlflow.MlflowClient`` bound to explicit tracking/registry URIs, so the global
MLflow state (``mlflow.set_tracking_uri``) is never touched. ``resolve`` is called at every model load and
stays cheap: a handful of registry calls plus the two small files ``MLmodel`` and the input example.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from registry.convert.cache import version_dir
from registry.errors import ModelNotInRegistry, RegistryError
from registry.model import ModelVersionInfo, RegisteredModelSummary
from registry.signature import ModelSignature
from registry.uri import ModelRef

logger = logging.getLogger(__name__)

_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
_DOWNLOAD_MARKER = ".download-complete"


class RegistryClient:
    """A thin, read-only view of one MLflow registry.

    Args:
        registry_uri: Model registry URI (``sqlite:///...``, ``http://mlflow:5000``, ``databricks-uc``...).
        tracking_uri: Tracking server URI for runs and artifacts; defaults to ``registry_uri``.
    """

    def __init__(self, registry_uri: str, tracking_uri: str | None = None) -> None:
        self.registry_uri = registry_uri
        self.tracking_uri = tracking_uri or registry_uri
        self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def resolve(self, ref: ModelRef) -> ModelVersionInfo:
        """Resolve a version or alias to a fully described model version.

        Raises:
            ModelNotInRegistry: the registered model, the version or the alias does not exist.
            RegistryError: the registry or artifact store could not be read.
        """
        registered = self._registered_model(ref.name)
        if ref.alias is not None:
            aliases = dict(registered.aliases or {})
            if ref.alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise ModelNotInRegistry(f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {known})")
            version = str(aliases[ref.alias])
        else:
            version = str(ref.version)
        mv = self._model_version(ref.name, version)
        metrics, params, experiment_id = self._run_data(mv.run_id)
        mlmodel, example = self._mlmodel(ref.name, version)
        metadata = dict(mlmodel.metadata or {})
        signature = ModelSignature.from_mlflow(mlmodel.signature, metadata) if mlmodel.signature is not None else None
        return ModelVersionInfo(
            name=ref.name,
            version=version,
            aliases=tuple(mv.aliases or ()),
            source=str(mv.source),
            run_id=mv.run_id or None,
            experiment_id=experiment_id,
            model_description=registered.description or None,
            version_description=mv.description or None,
            tags={**dict(registered.tags or {}), **dict(mv.tags or {})},
            metrics=metrics,
            params=params,
            flavors=tuple(mlmodel.flavors),
            signature=signature,
            input_example=input_example_records(example, signature),
            metadata=metadata,
            created_at_ms=int(mv.creation_timestamp) if mv.creation_timestamp is not None else None,
        )

    def list_models(self) -> list[RegisteredModelSummary]:
        """Every registered model, sorted by name."""
        out: list[RegisteredModelSummary] = []
        token: str | None = None
        while True:
            try:
                page = self._client.search_registered_models(max_results=1000, page_token=token)
            except MlflowException as exc:
                raise RegistryError(f"cannot list registered models at {self.registry_uri}: {exc.message}") from exc
            for rm in page:
                versions = sorted({str(v.version) for v in rm.latest_versions or ()}, key=int)
                out.append(
                    RegisteredModelSummary(
                        name=rm.name,
                        description=rm.description or None,
                        latest_versions=tuple(versions),
                        aliases={a: str(v) for a, v in (rm.aliases or {}).items()},
                        tags=dict(rm.tags or {}),
                    )
                )
            token = page.token
            if not token:
                break
        return sorted(out, key=lambda m: m.name)

    def download(
        self, info: ModelVersionInfo, cache_dir: Path, *, progress: Callable[[str], None] | None = None
    ) -> Path:
        """Download the model version's artifacts to ``cache_dir/<name>/<version>/artifacts`` once.

        Versions are immutable, so a completed download (marked by a marker file written after the
        directory is in place) is reused as is. ``progress`` hears "downloading" when a download starts.
        """
        base = version_dir(Path(cache_dir), info.name, info.version)
        target = base / "artifacts"
        marker = base / _DOWNLOAD_MARKER
        if marker.is_file() and target.is_dir():
            return target
        base.mkdir(parents=True, exist_ok=True)
        if progress is not None:
            progress("downloading")
        staging = base / f".tmp-download-{uuid.uuid4().hex}"
        try:
            uri = self._download_uri(info.name, info.version)
            local = Path(
                download_artifacts(
                    artifact_uri=uri,
                    dst_path=str(staging),
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.registry_uri,
                )
            )
            if not (local / "MLmodel").is_file():
                raise RegistryError(f"{info.key}: downloaded artifacts at {uri} contain no MLmodel file")
            marker.unlink(missing_ok=True)
            if target.exists():
                shutil.rmtree(target)
            local.rename(target)
            marker.write_text(uri)
        except MlflowException as exc:
            raise RegistryError(f"cannot download {info.key}: {exc.message}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("downloaded %s to %s", info.key, target)
        return target

    # -- registry calls -------------------------------------------------------------------------------

    def _registered_model(self, name: str) -> Any:
        try:
            return self._client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND:
                raise ModelNotInRegistry(f"registered model {name!r} does not exist") from exc
            raise RegistryError(f"cannot read registered model {name!r}: {exc.message}") from exc

    def _model_version(self, name: str, version: str) -> Any:
        try:
            return self._client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND or exc.error_code == "INVALID_PARAMETER_VALUE":
                raise ModelNotInRegistry(f"model {name!r} has no version {version}") from exc
            raise RegistryError(f"cannot read version {version} of model {name!r}: {exc.message}") from exc

    def _run_data(self, run_id: str | None) -> tuple[dict[str, float], dict[str, str], str | None]:
        if not run_id:
            return {}, {}, None
        try:
            run = self._client.get_run(run_id)
        except MlflowException as exc:
            logger.warning("run %s of a model version is unreadable (%s); metrics/params left empty", run_id, exc)
            return {}, {}, None
        return dict(run.data.metrics), dict(run.data.params), run.info.experiment_id

    def _download_uri(self, name: str, version: str) -> str:
        try:
            return str(self._client.get_model_version_download_uri(name, version)).rstrip("/")
        except MlflowException as exc:
            raise RegistryError(f"cannot locate artifacts of {name}/{version}: {exc.message}") from exc

    def _mlmodel(self, name: str, version: str) -> tuple[Model, Any]:
        """Fetch only ``MLmodel`` (and the input example file it names) and parse them."""
        uri = self._download_uri(name, version)
        with tempfile.TemporaryDirectory(prefix="modelport-mlmodel-") as tmp:
            try:
                self._fetch(f"{uri}/MLmodel", tmp)
                mlmodel = Model.load(str(Path(tmp) / "MLmodel"))
            except (MlflowException, OSError) as exc:
                raise RegistryError(f"cannot read the MLmodel file of {name}/{version} at {uri}: {exc}") from exc
            example = None
            info = mlmodel.saved_input_example_info or {}
            if info.get("artifact_path"):
                try:
                    self._fetch(f"{uri}/{info['artifact_path']}", tmp)
                    example = mlmodel.load_input_example(tmp)
                except Exception as exc:  # an unreadable example must not make the model unloadable
                    logger.warning("input example of %s/%s is unreadable: %s", name, version, exc)
        return mlmodel, example

    def _fetch(self, artifact_uri: str, dst: str) -> None:
        download_artifacts(
            artifact_uri=artifact_uri, dst_path=dst, tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
        )


def input_example_records(example: Any, signature: ModelSignature | None) -> list[dict[str, Any]] | None:
    """Turn a loaded MLflow input example into JSON-ready records (one dict per row).

    DataFrames give one record per row; a single tensor gives ``{<input name>: row}`` per row; a dict of
    equally long arrays is zipped into rows. Anything else (free JSON objects, sparse matrices) gives ``None``.
    """
    if example is None:
        return None
    if isinstance(example, pd.DataFrame):
        return [{str(k): _native(v) for k, v in row.items()} for row in example.to_dict(orient="records")]
    names = signature.input_names if signature is not None else []
    if isinstance(example, np.ndarray):
        name = names[0] if len(names) == 1 else "input"
        return [{name: _native(row)} for row in example]
    if isinstance(example, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in example.items()}
        lengths = {len(a) for a in arrays.values() if a.ndim > 0}
        if len(lengths) != 1 or any(a.ndim == 0 for a in arrays.values()):
            return None
        (n,) = lengths
        return [{k: _native(a[i]) for k, a in arrays.items()} for i in range(n)]
    return None


def _native(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
