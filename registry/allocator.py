"""The process's memory allocator, set for a server that streams request bodies.

A request body arrives as bytes objects of up to 256 KiB each (the event loop's reads). glibc's
malloc adapts its thresholds to the largest block freed so far: it serves such sizes from the heap
once it has freed one, but gives the top of the heap back to the kernel as soon as twice that is
free, which is at the end of every request. The next request then has the kernel fault in and
zero every page of its buffers again, 500-800 page faults per PATCH of an upload here, so that a
chunked upload spent a third more CPU per MiB than a monolithic one (bench/README.md).

The settings are where glibc's own adaptation ends (its largest mmap threshold, 32 MiB on 64-bit,
and a trim threshold to match), taken from the start: what a worker frees below 32 MiB it keeps
for the next request, as it already did for the S3 driver's 16 MiB part buffers once it had freed
one. Each malloc arena may so keep up to 32 MiB free. An operator's own GLIBC_TUNABLES malloc
settings or MALLOC_*_ variables are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("cargobay.registry")

#: mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Allocations at least this large are their own mapping, given back as soon as they are freed.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: The top of a heap goes back to the kernel only when more than this is free there.
TRIM_THRESHOLD = 32 * 1024 * 1024

_OPERATOR_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Set this process's malloc as the module says; whether it took the settings (False where
    the C library is not glibc, or where the operator has set malloc up already)."""
    if not sys.platform.startswith("linux"):
        return False
    operator_set = any(os.environ.get(name) for name in _OPERATOR_SETTINGS)
    if operator_set or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("malloc set to keep freed memory below %d bytes: %s", TRIM_THRESHOLD, taken)
    return taken
