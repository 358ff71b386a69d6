"""How many threads the CPU training kernels use, and how a call is split over them."""
import os
import threading
import time

import numpy
import pytest
from hypothesis import given, settings, strategies as st

from branchynet.links import kernelthreads


@pytest.fixture
def cores(monkeypatch):
    """Pretend this process may use ``usable`` cores, ``quota`` allowed by a cgroup."""
    monkeypatch.delenv('BRANCHYNET_TRAIN_THREADS', raising=False)
    monkeypatch.setattr(kernelthreads, '_sharers', 1)

    def set_cores(usable, quota=None):
        monkeypatch.setattr(kernelthreads.os, 'sched_getaffinity', lambda pid: set(range(usable)))
        monkeypatch.setattr(kernelthreads, '_cgroup_quota', lambda: quota)
        monkeypatch.setattr(kernelthreads, '_quota_read', [])
    return set_cores


@pytest.mark.parametrize('usable, quota, sharers, expected', [
    (2, None, 1, 2),     # one process: every core it may use
    (2, None, 2, 1),     # two MPI ranks on the same two cores: one thread each, not four in all
    (8, None, 3, 2),     # shares rounded down
    (2, None, 4, 1),     # more ranks than cores: still one thread
    (16, 2, 1, 2),       # a container's CPU quota caps the cores
    (16, 4, 2, 2),       # ... and the ranks share what it allows
])
def test_threads_are_the_usable_cores_shared_among_processes(cores, usable, quota, sharers,
                                                             expected, monkeypatch):
    cores(usable, quota)
    kernelthreads.share_cores(sharers)
    assert kernelthreads.threads() == expected
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '3')  # the user's setting wins
    assert kernelthreads.threads() == 3


@pytest.mark.parametrize('bad', [0, -1, True])
def test_sharing_with_no_processes_is_refused(cores, bad):
    with pytest.raises(ValueError, match='processes must be >= 1'):
        kernelthreads.share_cores(bad)
    assert kernelthreads._sharers == 1


def test_the_cgroup_quota_is_read_from_cgroup_v2(monkeypatch, tmp_path):
    files = {'/sys/fs/cgroup/cpu.max': '150000 100000\n'}
    real_open = open

    def fake_open(path, *a, **k):
        if path in files:
            return real_open(_write(tmp_path, files[path]), *a, **k)
        if str(path).startswith('/sys/fs/cgroup'):
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)
    monkeypatch.setattr('builtins.open', fake_open)
    assert kernelthreads._cgroup_quota() == 2   # 1.5 CPUs, rounded up
    files['/sys/fs/cgroup/cpu.max'] = 'max 100000\n'
    assert kernelthreads._cgroup_quota() is None


def _write(tmp_path, text):
    path = tmp_path / 'cgroup_file'
    path.write_text(text)
    return str(path)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), threads=st.integers(1, 9))
def test_pieces_cover_every_index_once_and_shrink(n, threads):
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', str(threads))
        _check_pieces(n, threads)


def _check_pieces(n, threads):
    ranges = kernelthreads.pieces(n)
    assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in ranges]
    assert sizes == sorted(sizes, reverse=True)
    if threads == 1 and n:
        assert ranges == [(0, n)]
    assert kernelthreads.pieces(n) == ranges  # the same ranges every time: a fixed summation order


@pytest.mark.parametrize('threads', ['1', '2', '4'])
def test_every_range_runs_exactly_once(monkeypatch, threads):
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', threads)
    hits = numpy.zeros(1000, numpy.int64)
    seen = set()

    def kernel(out, start, stop):
        seen.add(threading.get_ident())
        out[start:stop] += 1
    kernelthreads.run_split(kernel, len(hits), hits)
    assert (hits == 1).all()
    assert len(seen) <= int(threads)


def test_a_helpers_error_reaches_the_caller_and_the_next_call_works(monkeypatch):
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '2')

    def failing(start, stop):
        time.sleep(0.001)
        if start > 0:
            raise ZeroDivisionError('range {}-{}'.format(start, stop))
    with pytest.raises(ZeroDivisionError, match='range'):
        kernelthreads.run_split(failing, 64)
    hits = numpy.zeros(64, numpy.int64)
    kernelthreads.run_split(lambda out, a, b: out.__setitem__(slice(a, b), out[a:b] + 1), 64, hits)
    assert (hits == 1).all()


def test_calls_from_two_threads_at_once_each_get_all_their_ranges(monkeypatch):
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '2')
    results, errors = {}, []

    def kernel(out, start, stop):
        time.sleep(0.0002)
        out[start:stop] += 1

    def caller(name):
        try:
            for _ in range(20):
                hits = numpy.zeros(200, numpy.int64)
                kernelthreads.run_split(kernel, len(hits), hits)
                results.setdefault(name, []).append(bool((hits == 1).all()))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    callers = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    assert not errors
    assert all(all(r) and len(r) == 20 for r in results.values()) and len(results) == 3


def test_a_call_from_inside_a_kernel_runs_on_its_own_thread(monkeypatch):
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '2')
    inner = numpy.zeros((8, 10), numpy.int64)

    def outer(start, stop):
        for row in range(start, stop):
            kernelthreads.run_split(lambda out, a, b: out.__setitem__(slice(a, b), 1), 10,
                                    inner[row])
    kernelthreads.run_split(outer, 8)
    assert (inner == 1).all()


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='no fork on this platform')
def test_a_forked_child_runs_calls_without_the_parents_helpers(monkeypatch):
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '2')
    kernelthreads.run_split(lambda a, b: None, 8)  # the parent's helpers started
    pid = os.fork()
    if pid == 0:  # the child: a call must finish (its helpers are started afresh)
        hits = numpy.zeros(64, numpy.int64)
        kernelthreads.run_split(lambda out, a, b: out.__setitem__(slice(a, b), 1), 64, hits)
        os._exit(0 if (hits == 1).all() else 3)
    deadline = time.time() + 30
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail('the forked child hung in run_split')


def test_the_cgroup_quota_is_read_once_per_process(monkeypatch):
    reads = []
    monkeypatch.setattr(kernelthreads, '_cgroup_quota', lambda: reads.append(1) or 3)
    monkeypatch.setattr(kernelthreads, '_quota_read', [])
    monkeypatch.setattr(kernelthreads.os, 'sched_getaffinity', lambda pid: set(range(8)))
    assert [kernelthreads.usable_cores() for _ in range(5)] == [3] * 5
    assert len(reads) == 1
