"""Threads of the CPU training kernels: how many, and how a call is split over them.

``run_split(kernel, n, ...)`` runs ``kernel(..., start, stop)`` over ranges
covering ``range(n)`` (``pieces(n)``) on the calling thread and up to
``threads() - 1`` helper threads. The helpers are started once and wait,
each on a queue of its own, for the next call. Every thread takes the next
range not yet taken, so one that starts late (woken from its queue) or
shares its core with another process does fewer.

``threads()`` is ``$BRANCHYNET_TRAIN_THREADS`` if set, else the cores this
process may use (its CPU affinity, capped by a cgroup CPU quota) divided
among the processes that ``share_cores`` says use the same cores (MPI ranks
on one machine; ``training.distributed`` says so), at least 1.
"""
import math
import os
import queue
import threading

#: processes (this one included) that train on the cores this process may use
_sharers = 1
_lock = threading.Lock()
#: held while a call hands ranges to the helpers; a call that finds it held
#: (another thread's call, or a call from inside a kernel) runs on its own thread
_handing_out = threading.Lock()
_helper_queues = []
#: the cgroup CPU quota as first read in this process (``_quota``)
_quota_read = []


def _cgroup_quota():
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us``),
    rounded up, or None where there is no quota."""
    try:
        with open('/sys/fs/cgroup/cpu.max') as f:
            quota, period = f.read().split()[:2]
        if quota != 'max':
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open('/sys/fs/cgroup/cpu/cpu.cfs_quota_us') as f:
            quota = int(f.read())
        with open('/sys/fs/cgroup/cpu/cpu.cfs_period_us') as f:
            period = int(f.read())
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def _quota():
    """``_cgroup_quota()``, read once per process: reading its files took 33 us,
    and ``threads()`` runs for every kernel call (about 1,100 per B-ResNet-110
    main step, 35 ms in all, on the Intel Xeon)."""
    if not _quota_read:
        _quota_read.append(_cgroup_quota())
    return _quota_read[0]


def affinity():
    """The set of cores this process may run on (every core where the
    platform does not say)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return set(range(os.cpu_count() or 1))


def usable_cores():
    """The cores this process may run on: its CPU affinity, capped by the
    cgroup CPU quota (a container's ``--cpus``) where there is one."""
    cores = len(affinity())
    quota = _quota()
    return max(1, min(cores, quota) if quota else cores)


def share_cores(processes):
    """Say that ``processes`` processes (this one included) train at once on
    the cores this process may use, as MPI ranks on one machine do:
    ``threads()`` then gives each its share instead of all of them. Measured
    on B-ResNet-110, 2 ranks on 2 cores (Intel Xeon): with 2 kernel threads
    per rank (4 threads on 2 cores), 0.9 global batches of 64 per second;
    with 1, 1.1 (two runs one after the other on an otherwise idle machine)."""
    global _sharers
    if isinstance(processes, bool) or int(processes) < 1:
        raise ValueError('processes must be >= 1, got {!r}'.format(processes))
    _sharers = int(processes)


def threads():
    """Threads the kernels split a batch over (see the module docs)."""
    value = os.environ.get('BRANCHYNET_TRAIN_THREADS')
    if value:
        return max(1, int(value))
    return max(1, usable_cores() // _sharers)


def split(n, parts):
    """``parts`` contiguous ``(start, stop)`` ranges of nearly equal size covering ``range(n)``."""
    parts = max(1, min(parts, n))
    edges = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def pieces(n):
    """The ranges ``run_split`` splits ``range(n)`` into, in order: one where
    there is one thread, else each range the remainder over the threads
    (rounded up), so they shrink towards the end (64 over 2 threads: 32, 16,
    8, 4, 2, 1, 1). Measured on a B-ResNet-110 main step, 2 threads, Intel
    Xeon: the caller waited 20 ms per step for the last range of a helper,
    against 55-59 ms with 8 equal ranges."""
    t = threads()
    if t == 1 or n <= 1:
        return [(0, n)] if n > 0 else []
    out, start = [], 0
    while start < n:
        stop = start + -(-(n - start) // t)
        out.append((start, stop))
        start = stop
    return out


def _serve(jobs):
    while True:
        work, done = jobs.get()
        try:
            work()
        except BaseException as e:  # handed to the caller, which raises it
            done.put(e)
        else:
            done.put(None)


def _helpers(count):
    """The job queues of ``count`` helper threads, started on first use."""
    with _lock:
        while len(_helper_queues) < count:
            jobs = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(jobs,), daemon=True,
                             name='branchynet-kernels-{}'.format(len(_helper_queues))).start()
            _helper_queues.append(jobs)
        return _helper_queues[:count]


def _forget_helpers():
    """In a forked child: the helper threads do not exist there; its quota is read anew."""
    global _handing_out, _lock
    _helper_queues.clear()
    _quota_read.clear()
    _handing_out, _lock = threading.Lock(), threading.Lock()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_forget_helpers)


def run_split(kernel, n, *args, parts=None):
    """``kernel(*args, start, stop)`` for each range of ``parts`` (default
    ``pieces(n)``), on up to ``threads()`` threads; returns once every range
    is done, raising the first error. Handing a call to helpers waiting on
    queues took half the time of a ``ThreadPoolExecutor.submit`` (10 against
    20 ms per B-ResNet-110 main step, 536 calls, 2 threads, Intel Xeon)."""
    ranges = list(parts or pieces(n))
    taken = iter(ranges)  # next() on a list iterator is atomic under the interpreter lock

    def work():
        for start, stop in taken:
            kernel(*args, start, stop)
    helpers = min(threads(), len(ranges)) - 1
    if helpers < 1 or not _handing_out.acquire(blocking=False):
        work()
        return
    try:
        done = queue.SimpleQueue()  # this call's own: a call left by an error keeps its replies
        for jobs in _helpers(helpers):
            jobs.put((work, done))
        try:
            work()
        finally:
            errors = [done.get() for _ in range(helpers)]
    finally:
        _handing_out.release()
    for e in errors:
        if e is not None:
            raise e
