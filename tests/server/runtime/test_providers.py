from __future__ import annotations

import logging
from collections.abc import Iterator

import onnxruntime as ort
import pytest

from server.runtime import providers
from server.runtime.providers import CPU, CUDA, select_providers

NO_GPU = providers.gpu_evidence() is None
ORT_HAS_CUDA = CUDA in ort.get_available_providers()


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    providers.clear_cache()
    yield
    providers.clear_cache()


def test_cpu_preference() -> None:
    assert select_providers("cpu") == [CPU]
    assert select_providers(" CPU ") == [CPU]


def test_unknown_preference() -> None:
    with pytest.raises(ValueError, match="unknown execution provider preference 'tpu'"):
        select_providers("tpu")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_auto_without_gpu_is_cpu_and_quiet(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.runtime")
    assert select_providers("auto") == [CPU]
    assert select_providers() == [CPU]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("serves on CPUExecutionProvider" in r.getMessage() for r in caplog.records)
    assert "onnxruntime" not in capfd.readouterr().err


@pytest.mark.skipif(not (NO_GPU and ORT_HAS_CUDA), reason="needs onnxruntime-gpu on a machine without a GPU")
def test_cuda_probe_fails_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    usable, reason = providers.cuda_status(require=True)
    assert not usable
    assert "fell back" in reason or "failed" in reason
    err = capfd.readouterr().err
    assert "[E:onnxruntime" not in err and "[W:onnxruntime" not in err


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_required_raises_clearly() -> None:
    with pytest.raises(RuntimeError, match=r"CUDA execution was required \(providers='cuda'\) but cannot be used"):
        select_providers("cuda")
