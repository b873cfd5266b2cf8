"""Give freed heap memory back to the OS after large transient work.

A 100k-object listing or baseline switch frees tens of MB of short-lived objects (XML pages,
the parsed JSON manifest, one-sided key sets). CPython returns empty 1 MiB object arenas to
the OS itself, but glibc keeps freed malloc'd blocks in its heap; `malloc_trim(0)` releases
the free pages (measured on 100k keys: steady-state RSS 157 instead of ~250 B/object).
No-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_loaded = False


def release() -> None:
    global _trim, _loaded
    if not _loaded:
        _loaded = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
        except (OSError, AttributeError):
            _trim = None
    if _trim is not None:
        _trim(0)
