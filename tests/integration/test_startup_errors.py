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
