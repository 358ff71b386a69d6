"""Wall-clock timing that is honest on GPUs (synchronised) and on CPUs."""
import collections
import contextlib
import time

import numpy


def synchronize(xp):
    """Wait for queued device work, so a timer stops when the work is done."""
    if xp is not numpy:
        import cupy
        cupy.cuda.get_current_stream().synchronize()


class StageTimer:
    """Accumulates synchronised wall time per named stage of a forward pass.

    ``stage(name)`` is a context manager; ``totals[name]`` holds seconds.
    Used to report the original's trunk-only figure beside end-to-end time.
    ``clock`` is the time source in seconds (default ``time.perf_counter``).
    """

    def __init__(self, xp=numpy, clock=None):
        self.xp = xp
        self.clock = clock or time.perf_counter
        self.totals = collections.defaultdict(float)

    @contextlib.contextmanager
    def stage(self, name):
        synchronize(self.xp)
        start = self.clock()
        try:
            yield
        finally:
            synchronize(self.xp)
            self.totals[name] += self.clock() - start


class _NullTimer:
    """A timer that records nothing; ``stage`` costs a method call, not a
    generator (this sits on the batch-1 hot path)."""

    def stage(self, name):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


NULL_TIMER = _NullTimer()

