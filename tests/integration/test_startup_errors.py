"""Startup failures are one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MODELPORT = str(Path(sys.executable).with_name("modelport"))


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["--registry-uri", "foo://bar", "--port", "1"],
            {},
            "modelport: cannot start: UnsupportedModelRegistryStoreURIException",
        ),
        ([], {"MODELPORT_PORT": "abc"}, "modelport: invalid settings: port: Input should be a valid integer"),
    ],
)
def test_one_line_and_exit_2(tmp_path: Path, args: list[str], env: dict[str, str], expected: str) -> None:
    proc = subprocess.run(
        [MODELPORT, "serve", "models:/churn@champion", "--state-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("modelport:")]
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_never_creates_an_empty_registry(tmp_path: Path) -> None:
    """A missing local registry is an error naming the fixes, not an empty mlflow.db in the working directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(
        [MODELPORT, "serve", "models:/churn@champion", "--port", "1"],
        capture_output=True, text=True, timeout=120, cwd=cwd, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("modelport: registry not found: sqlite:///")
    assert "--registry-uri" in proc.stderr and "--state-dir" in proc.stderr and "Traceback" not in proc.stderr
    assert list(cwd.iterdir()) == []
