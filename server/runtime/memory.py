"""Give memory freed after a burst back to the operating system.

CPython frees request bodies and decoded inputs to the C allocator, and glibc's ``malloc`` keeps the freed pages of
its heap for reuse instead of returning them: after an overload (thousands of bodies held at once) the process's RSS
stays at its peak for good. ``malloc_trim(0)`` returns every free page (``madvise``), in milliseconds; elsewhere
than glibc (musl, macOS) ``trim`` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _load() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_MALLOC_TRIM = _load()


def trim() -> bool:
    """Return the C heap's free pages to the OS; whether anything was returned (``False`` without glibc)."""
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
