"""Process-wide settings that make CPU training faster; applied by the entry points.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised
dynamically up to 32 MiB) with fresh ``mmap`` calls and returns them to the
kernel on ``free``; a training step allocates and frees arrays of tens of MiB
(im2col columns, activations, gradients), so every step pays page faults
and ``munmap`` in the kernel. Raising the mmap and trim thresholds keeps
those pages in the heap for reuse. This is what setting the environment
variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` does,
applied from inside the process with ``mallopt``.
"""
import ctypes
import ctypes.util

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# 1 GiB: above every array a BranchyNet training step allocates.
_MMAP_THRESHOLD = 1024 * 1024 * 1024
_TRIM_THRESHOLD = 1024 * 1024 * 1024


def tune_allocator():
    """Keep freed large blocks in the heap (glibc only); returns whether it applied."""
    name = ctypes.util.find_library('c')
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
