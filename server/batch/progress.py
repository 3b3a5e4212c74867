"""Progress of a batch job: a bar with rows/s and ETA on a terminal (stderr), log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)

#: Log lines (not on a terminal) come at most this often.
LOG_EVERY_S = 10.0
_BAR = 24


class Progress:
    """Counts scored rows and shows them.

    Args:
        total: rows in the input when known (for the ETA and the bar), else ``None``.
        label: what is being scored (the model URI).
        stream: where a terminal bar goes (default stderr); a bar is drawn only when it is a TTY.
        enabled: ``False`` shows nothing (the Python API's default).
    """

    def __init__(self, total: int | None, label: str, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.rows = 0
        self.started = time.monotonic()
        self._shown = -float("inf")  # the first chunk is always shown

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.rows / elapsed if elapsed > 0 else 0.0

    def advance(self, rows: int) -> None:
        self.rows += rows
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty and now - self._shown >= 0.1:
            self._shown = now
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif not self.tty and now - self._shown >= LOG_EVERY_S:
            self._shown = now
            log.info("scoring", extra=self.fields())

    def line(self) -> str:
        """``label [#####-----]  42% 420,000/1,000,000 rows  410k rows/s  ETA 1s``."""
        rate = self.rate
        head = f"{self.label} "
        if self.total:
            done = min(self.rows / self.total, 1.0)
            filled = int(done * _BAR)
            head += f"[{'#' * filled}{'-' * (_BAR - filled)}] {done:4.0%} {self.rows:,}/{self.total:,} rows"
        else:
            head += f"{self.rows:,} rows"
        head += f"  {_si(rate)} rows/s"
        if self.total and rate > 0:
            head += f"  ETA {_duration(max(self.total - self.rows, 0) / rate)}"
        return head

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {"model": self.label, "rows": self.rows, "rows_per_s": round(self.rate)}
        if self.total:
            out["total"] = self.total
            out["eta_s"] = round(max(self.total - self.rows, 0) / self.rate, 1) if self.rate > 0 else None
        return out

    def finish(self, ok: bool) -> None:
        """End the bar (a final line) or log the outcome."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if ok else "  (aborted)\n"))
            self.stream.flush()
        elif ok:
            log.info("scored", extra=self.fields() | {"seconds": round(time.monotonic() - self.started, 3)})


def _si(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.0f}k"
    return f"{rate:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
