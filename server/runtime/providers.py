"""Choose the onnxruntime execution providers this process serves with.

``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` even on machines without a GPU (or without the CUDA/cuDNN
libraries it was built against) and only finds out when a session is created, logging an ERROR as it falls back to
the CPU. So "auto" first looks for cheap evidence of an NVIDIA GPU and only then creates a tiny probe session, with
onnxruntime's logging silenced, to see which provider it really got.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shutil
import threading

import onnxruntime as ort

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERENCES = ("auto", "cpu", "cuda")

_ORT_DEFAULT_SEVERITY = 2  # warning: onnxruntime's own default for its process-wide logger
_ORT_SILENT_SEVERITY = 4  # fatal only
_probe_lock = threading.Lock()


def select_providers(preference: str = "auto") -> list[str]:
    """Return the provider list to create sessions with, best first.

    Args:
        preference: ``"auto"`` (CUDA when it actually works here, else CPU), ``"cpu"`` (CPU only) or ``"cuda"``
            (CUDA required).

    Returns:
        ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` or ``["CPUExecutionProvider"]``. The result is cached
        per preference for the life of the process.

    Raises:
        ValueError: unknown preference.
        RuntimeError: ``"cuda"`` was required but CUDA cannot be used here; the message says why.
    """
    return list(_select(preference.strip().lower()))


@functools.cache
def _select(preference: str) -> tuple[str, ...]:
    if preference not in PREFERENCES:
        raise ValueError(f"unknown execution provider preference {preference!r}; expected one of {PREFERENCES}")
    if preference == "cpu":
        logger.info("onnxruntime serves on %s (providers='cpu')", CPU)
        return (CPU,)
    if preference == "cuda":
        usable, reason = cuda_status(require=True)
        if not usable:
            raise RuntimeError(f"CUDA execution was required (providers='cuda') but cannot be used: {reason}")
        logger.info("onnxruntime serves on %s (providers='cuda')", CUDA)
        return (CUDA, CPU)
    usable, reason = cuda_status()
    if usable:
        logger.info("onnxruntime serves on %s (%s)", CUDA, reason)
        return (CUDA, CPU)
    logger.info("onnxruntime serves on %s (%s)", CPU, reason)
    return (CPU,)


def cuda_status(*, require: bool = False) -> tuple[bool, str]:
    """Say whether onnxruntime can run on CUDA here, and why (cached).

    Args:
        require: probe with a real session even without cheap evidence of a GPU (used when CUDA is demanded).

    Returns:
        ``(usable, reason)``.
    """
    if CUDA not in ort.get_available_providers():
        return False, f"this onnxruntime build ({ort.__version__}) has no {CUDA}; install onnxruntime-gpu"
    evidence = gpu_evidence()
    if evidence is None and not require:
        return False, "no NVIDIA GPU found (no /dev/nvidia0 or nvidia-smi, or libcuda.so.1 not loadable)"
    usable, reason = _probe_cuda()
    if not usable and evidence is None:
        reason += "; no NVIDIA GPU found (no /dev/nvidia0 or nvidia-smi, or libcuda.so.1 not loadable)"
    return usable, reason


def gpu_evidence() -> str | None:
    """Return a short description of cheap evidence of a usable NVIDIA driver, or ``None``."""
    if os.path.exists("/dev/nvidia0"):
        device = "/dev/nvidia0"
    elif shutil.which("nvidia-smi"):
        device = "nvidia-smi"
    else:
        return None
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    return f"{device} and libcuda.so.1"


@functools.cache
def _probe_cuda() -> tuple[bool, str]:
    """Create a one-node session asking for CUDA and report the provider it really got."""
    with _probe_lock:
        options = ort.SessionOptions()
        options.log_severity_level = _ORT_SILENT_SEVERITY
        # The "failed to load the CUDA provider" error goes through the process-wide logger, not the session's.
        ort.set_default_logger_severity(_ORT_SILENT_SEVERITY)
        try:
            session = ort.InferenceSession(_probe_model(), options, providers=[CUDA, CPU])
            got = session.get_providers()[0]
        except Exception as exc:  # a broken CUDA install may raise instead of falling back
            return False, f"creating a CUDA session failed: {type(exc).__name__}: {exc}"
        finally:
            ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
    if got == CUDA:
        return True, "CUDA probe session succeeded"
    return False, (
        f"onnxruntime {ort.__version__} could not create {CUDA} (missing GPU, driver or the CUDA/cuDNN libraries "
        "it was built against) and fell back to the CPU"
    )


def _probe_model() -> bytes:
    """A serialized one-node ``Identity`` model (float32, shape ``[1]``)."""
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "cuda_probe",
        [value("x", TensorProto.FLOAT, [1])],
        [value("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def clear_cache() -> None:
    """Forget cached probe results (tests)."""
    _select.cache_clear()
    _probe_cuda.cache_clear()
