"""Keep freed heap memory in the process, so that batch after batch does not page-fault.

FLIPD's forward-mode pass holds a primal and a tangent activation per layer, more than a
forward pass does. With glibc's default policy the heap top that a batch frees is returned to
the kernel (``M_TRIM_THRESHOLD`` follows the dynamic mmap threshold, at most 64 MiB) and the next
batch faults every page of it in again: 3,500-10,000 minor page faults per FLIPD batch on the
shipped digits UNet (batch 256), 10-25% of its time, while a forward pass of the same batch
faults none (measured with ``getrusage``, torch 2.13, 1 thread; ``benchmarks/speed_flipd.py``).
PyTorch's CPU allocator has no cache of its own, so the fix is glibc's: :func:`retain_freed_memory`
raises the trim threshold to 1 GiB and fixes the mmap threshold at its dynamic maximum (32 MiB),
once per process. Peak memory is unchanged; memory freed by a batch stays with the process for
the next one instead of going back to the system.

Only on Linux with glibc; a no-op elsewhere and when the environment variable
``LIDMEM_KEEP_FREED_MEMORY=0`` is set. Called by the estimators when they run, never at import.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_TRIM_BYTES = 1 << 30
_MMAP_BYTES = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems

_state: dict[str, bool] = {}


def retain_freed_memory() -> bool:
    """Apply the glibc settings above once per process; returns whether they are in effect."""
    if "done" in _state:
        return _state["done"]
    ok = False
    if os.environ.get("LIDMEM_KEEP_FREED_MEMORY", "1") != "0" and sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(None)
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
        except (OSError, AttributeError):
            ok = False
    _state["done"] = ok
    return ok
