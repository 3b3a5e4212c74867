"""On-disk cache of conversions.

Layout (model versions are immutable, so entries never go stale)::

    <cache_dir>/<name>/<version>/artifacts/                    the downloaded MLflow model (registry.client)
    <cache_dir>/<name>/<version>/<sha256[:16]>-c<N>/model.onnx  the converted model (absent for pyfunc fallbacks)
    <cache_dir>/<name>/<version>/<sha256[:16]>-c<N>/converted.json

``sha256`` hashes the model's artifact files (names and bytes), ``N`` is :data:`CONVERTER_VERSION`: bumping it
after a converter change makes every model convert again, including cached pyfunc fallbacks. Entries are built
in a temporary sibling directory and renamed into place, so a reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from registry.model import ConvertedModel, Parity

logger = logging.getLogger(__name__)

#: Bump when a converter change could alter the produced ONNX or the pyfunc/ONNX decision.
CONVERTER_VERSION = 2

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_NOT_STORED = {"model_dir", "from_cache"}
_TUPLES = {"classes", "closed_categories"}


def version_dir(cache_dir: Path, name: str, version: str) -> Path:
    """``cache_dir/<name>/<version>``, with the model name made filesystem-safe (and collision-free)."""
    safe = _SAFE.sub("_", name)
    if safe != name or safe in {".", ".."}:
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return Path(cache_dir) / safe / str(version)


def artifact_checksum(model_dir: Path) -> str:
    """SHA-256 over the relative paths and contents of every file under ``model_dir`` (sorted)."""
    digest = hashlib.sha256()
    root = Path(model_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def entry_dir(cache_dir: Path, name: str, version: str, checksum: str) -> Path:
    """The cache entry of one conversion of one model version."""
    return version_dir(cache_dir, name, version) / f"{checksum[:16]}-c{CONVERTER_VERSION}"


def staging_dir(entry: Path) -> Path:
    """A fresh temporary directory next to ``entry`` to build it in."""
    path = entry.parent / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def load(entry: Path, model_dir: Path) -> ConvertedModel | None:
    """The cached conversion in ``entry`` (``from_cache=True``), or ``None`` when absent or unreadable."""
    meta = entry / "converted.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
        converted = _from_json(data, entry, Path(model_dir))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        logger.warning("ignoring unreadable conversion cache entry %s: %s", entry, exc)
        return None
    if converted.runtime == "onnx" and (converted.onnx_path is None or not converted.onnx_path.is_file()):
        logger.warning("ignoring conversion cache entry %s: model.onnx is missing", entry)
        return None
    return converted


def commit(staging: Path, entry: Path, converted: ConvertedModel) -> ConvertedModel:
    """Write ``converted.json`` into ``staging`` (which holds ``model.onnx`` if any) and move it to ``entry``.

    Returns the model with ``onnx_path`` pointing into the final entry. When another process committed the
    same entry first, its copy wins and ``staging`` is discarded.
    """
    onnx_name = None
    if converted.onnx_path is not None:
        onnx_name = "model.onnx"
        if converted.onnx_path != staging / onnx_name:
            shutil.copyfile(converted.onnx_path, staging / onnx_name)
    (staging / "converted.json").write_text(json.dumps(_to_json(converted, onnx_name), indent=2, sort_keys=True))
    for _ in range(2):
        existing = load(entry, converted.model_dir) if entry.exists() else None
        if existing is not None:  # someone else converted the same version meanwhile: theirs wins
            shutil.rmtree(staging, ignore_errors=True)
            return replace(existing, from_cache=False)
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)  # an unreadable leftover
        try:
            os.rename(staging, entry)
        except OSError:
            continue  # lost a race to another writer: load theirs
        return replace(converted, onnx_path=entry / onnx_name if onnx_name else None)
    raise OSError(f"cannot commit conversion cache entry {entry}")


def _to_json(converted: ConvertedModel, onnx_name: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"converter_version": CONVERTER_VERSION}
    for f in fields(ConvertedModel):
        if f.name in _NOT_STORED:
            continue
        value = getattr(converted, f.name)
        if f.name == "onnx_path":
            value = onnx_name
        elif f.name == "parity" and value is not None:
            value = {k.name: getattr(value, k.name) for k in fields(Parity)}
        elif f.name == "categories":
            value = {k: [_plain(v) for v in vs] for k, vs in value.items()}
        elif f.name == "classes" and value is not None:
            value = [_plain(v) for v in value]
        elif f.name in {"input_map", "input_dtypes"}:
            value = dict(value)
        data[f.name] = value
    return data


def _from_json(data: dict[str, Any], entry: Path, model_dir: Path) -> ConvertedModel:
    kwargs: dict[str, Any] = {}
    names = {f.name for f in fields(ConvertedModel)} - _NOT_STORED
    for key, value in data.items():
        if key not in names:
            continue
        if key == "onnx_path":
            value = entry / value if value else None
        elif key == "parity" and value is not None:
            value = Parity(**value)
        elif key == "categories":
            value = {k: tuple(vs) for k, vs in value.items()}
        elif key in _TUPLES and value is not None:
            value = tuple(value)
        kwargs[key] = value
    return ConvertedModel(model_dir=model_dir, from_cache=True, **kwargs)


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value
