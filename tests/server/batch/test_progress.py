"""The progress line (terminal) and log records (not a terminal); the CLI's copies of the batch constants."""

from __future__ import annotations

import io
import logging

import pytest

from server.batch import cli, model, sinks, sources
from server.batch.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_has_rows_rate_and_eta() -> None:
    out = Tty()
    progress = Progress(1_000_000, "models:/m@champion", stream=out)
    progress.advance(250_000)
    line = out.getvalue()
    assert line.startswith("\rmodels:/m@champion [######------------------]  25% 250,000/1,000,000 rows")
    assert "rows/s" in line and "ETA" in line
    progress.finish(ok=False)
    assert out.getvalue().endswith("(aborted)\n")


def test_unknown_total_shows_rows_and_rate_only() -> None:
    progress = Progress(None, "m", stream=Tty())
    progress.rows = 1234
    assert progress.line().startswith("m 1,234 rows  ") and "ETA" not in progress.line()


def test_log_lines_when_not_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.batch.progress")
    progress = Progress(100, "m", stream=io.StringIO())
    progress.advance(10)  # the first chunk is always logged, later ones at most every LOG_EVERY_S
    progress.advance(10)
    progress.finish(ok=True)
    assert [r.message for r in caplog.records] == ["scoring", "scored"]
    assert caplog.records[0].rows == 10 and caplog.records[1].rows == 20  # type: ignore[attr-defined]


def test_nothing_shown_when_disabled() -> None:
    out = Tty()
    progress = Progress(10, "m", stream=out, enabled=False)
    progress.advance(5)
    progress.finish(ok=True)
    assert out.getvalue() == "" and progress.rows == 5


def test_cli_constants_match_the_modules() -> None:
    assert cli.FORMATS == sources.FORMATS
    assert cli.MODES == sinks.MODES
    assert cli.DEFAULT_CHUNK_ROWS == model.DEFAULT_CHUNK_ROWS
