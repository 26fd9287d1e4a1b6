"""The C allocator's setting for a worker process: big buffers go back to the OS when freed.

Why: glibc's ``malloc`` serves blocks under its mmap threshold from its heaps, and raises that
threshold (up to 32 MiB) each time a bigger mmapped block is freed, so after the first large
photo nearly every array of a job (a 12 MP mask is 11 MiB, a crop a few MiB) comes from the
heaps, whose freed memory mostly stays resident, and the encode threads each take their own
heap (arena). A job's resident peak then holds earlier stages' garbage on top of its live
buffers. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, glibc's ``mallopt(3)``; the same
as the ``MALLOC_MMAP_THRESHOLD_`` environment variable, which must be set before the process
starts) maps every block of at least :data:`MMAP_THRESHOLD_BYTES` on its own and unmaps it on
``free``. Measured (12 MP JPEG jobs, provided and automatic masks, 2 cores, the heap
trimmed before each job's idle reading, 4 jobs each): peak RSS above idle median 4.87 -> 3.65
frames (frame = 3000 x 4000 x 3 B); without the trims the default's idle RSS itself creeps up
by 2-5 frames of retained heap while this one's stays put. The price is time (page faults:
fresh pages are zeroed where reused heap pages were not): a 12 MP job's overhead (total - model
calls) ~400 -> ~500 ms, a 2 MP job's ~127 -> ~138 ms (medians, same measurements).
:attr:`core.settings.Settings.malloc_mmap_threshold_bytes` sets it (0: glibc's default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("maskpaint.memory")

#: Blocks of at least this many bytes are mapped on their own (returned to the OS on free):
#: the setting's default. Measured: 4 MiB ~ as low, 16 MiB no lower than glibc's default.
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def return_big_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap threshold to ``threshold`` bytes (this also stops its dynamic
    adjustment). Returns True when set; False where the C library is not glibc (nothing
    changes)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused", threshold)
    return ok
