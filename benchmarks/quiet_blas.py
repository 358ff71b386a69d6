"""Imported first by ``throughput.py``, before numpy loads: OpenBLAS's idle
threads (numpy's BLAS) spin 2**4 cycles instead of its default 2**28 (about
0.1 s), unless ``OPENBLAS_THREAD_TIMEOUT`` is set already. With the default,
a thread left spinning after one path's matrix product held a core while the
next path ran: interleaved with the fast path, the two-thread numba path ran
at one thread's speed (B-LeNet, batch 64: 30 against 16 µs per sample).
Other benchmarks (and their child processes) keep OpenBLAS's default.
"""
import os

OPENBLAS_THREAD_TIMEOUT = os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
