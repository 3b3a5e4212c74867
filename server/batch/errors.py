"""Errors of batch scoring, each a one-line message fit for a terminal.

```
BatchError                 bad input or output (the CLI exits 2)
├── SchemaMismatch         the table does not fit the model's signature; names the column (and the row, once read)
└── Cancelled              Ctrl-C or a cancel event; nothing was written (the CLI exits 130)
```

A model failure while scoring is the runtime's own error (``server.errors.InferenceFailed``) or an onnxruntime
exception; the job aborts the same way (no output) and the CLI exits 1.
"""

from __future__ import annotations


class BatchError(Exception):
    """A batch scoring job cannot start or cannot go on; nothing was written."""

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        """The offending input column, when one is to blame."""


class SchemaMismatch(BatchError):
    """The input does not match the model's signature (missing column, wrong type, null in a required column)."""


class Cancelled(BatchError):
    """The job was interrupted (Ctrl-C, or the caller's cancel event); no output was written."""
