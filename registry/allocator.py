"""The process's memory allocator, set for a server that streams request bodies.

A request body arrives as bytes objects of up to 256 KiB each (the event loop's reads). glibc's
malloc, left to itself, serves such sizes from the heap once it has freed one, but gives the top
of the heap back to the kernel as soon as twice that is free: at the end of every request. The
next request then has the kernel fault in and zero every page of its buffers again, 500-800 page
faults per PATCH of an upload here, so that a chunked upload spent a third more CPU per MiB than
a monolithic one (bench/README.md). With a fixed mmap threshold (4 MiB: a body's chunks always come
from the heap) and a trim threshold of 32 MiB, a worker keeps the few MiB its requests reuse.
"""

from __future__ import annotations

import ctypes
import sys

#: mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Allocations at least this large are their own mapping, given back at once when freed.
MMAP_THRESHOLD = 4 * 1024 * 1024
#: The heap's top is given back to the kernel only when more than this is free there.
TRIM_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set this process's malloc as the module says; whether it took the settings (False where
    the C library is not glibc, which is then left as it is)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
