"""Process-wide allocator tuning for processes that move camera images (ROS-free).

A 640x480 image is 0.3-0.9 MB. glibc serves allocations that large with fresh mmap()s and gives
freed memory back to the kernel, so every image copy (DDS take, Python conversion, publish) lands
on new pages: ~2,000 page faults and ~4 ms of system time per 3-camera RGB-D set in sync_node
(`wam-ros bench sync`). Keeping large blocks on the heap and not trimming it lets the same pages
serve the next frame.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit; images stay on the heap
TRIM_THRESHOLD = 256 * 1024 * 1024  # freed heap kept up to this much, for the next frames
DISABLE_VARIABLE = "WAM_ROS_MALLOC_TUNING"  # "0": leave glibc's defaults (memory-tight hosts)


def keep_freed_memory() -> bool:
    """Tune glibc malloc as above. Returns False when disabled by WAM_ROS_MALLOC_TUNING=0 or where
    there is no glibc mallopt (e.g. musl)."""
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    mallopt = getattr(ctypes.CDLL(libc_name), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
