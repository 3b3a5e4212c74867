from __future__ import annotations

from tests.lifecycle import scorers

__all__ = ["scorers"]
