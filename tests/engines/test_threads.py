"""One engine shared by many threads answers every call as a single-threaded
``net.predict`` does (a server handling requests on threads does exactly this).

Before the fix, 8 threads x 20 calls on B-LeNet gave wrong labels or exits on
the fast path (its per-shape buffers were shared) and the numba path (its
scratch slabs, batch-1 sample counter and kept decision were shared), with
``threads=1`` too; Chainer, ONNX Runtime and the bundle answered right.
"""
import threading

import numpy
import pytest

from branchynet.engines.fast import FastBranchyNet
from branchynet.measures import confidence
from networks import lenet_mnist

THREADS = 8
CALLS = 20
BATCHES = (1, 64)


@pytest.fixture(scope='module')
def lenet():
    """B-LeNet with random weights, a pool of inputs and a threshold that
    sends about half of them out at the early exit, in the widest gap between
    exit-1 entropies near the median (so float rounding in the last bits,
    which differs between engines, decides no exit)."""
    numpy.random.seed(0)
    net = lenet_mnist.get_network()
    x = numpy.random.RandomState(1).rand(256, 1, 28, 28).astype(numpy.float32)
    ent = numpy.sort(confidence.entropy_from_logits(net.get_logits(x)[0]))
    middle = numpy.arange(len(ent) // 4, 3 * len(ent) // 4)
    i = middle[numpy.argmax(ent[middle + 1] - ent[middle])]
    ts = [float((ent[i] + ent[i + 1]) / 2)]
    plans = []  # per thread: (start, batch size, expected labels, expected exits) per call
    rng = numpy.random.RandomState(2)
    for _ in range(THREADS):
        calls = []
        for c in range(CALLS):
            bs = BATCHES[(c + rng.randint(2)) % 2]
            start = int(rng.randint(len(x) - bs + 1))
            labels, exits = net.predict(x[start:start + bs], ts)
            calls.append((start, bs, labels, exits))
        plans.append(calls)
    exits = numpy.concatenate([c[3] for p in plans for c in p])
    assert 0.2 < (exits == 0).mean() < 0.8  # both exits take samples
    return net, x, ts, plans


def assert_threads_answer_as_predict(predict, lenet):
    """``predict(x, thresholds)`` called ``CALLS`` times from each of
    ``THREADS`` threads at once, on batches of 1 and 64 samples, returns
    the single-threaded ``net.predict`` answer every time."""
    _, x, ts, plans = lenet
    barrier = threading.Barrier(THREADS)
    wrong, errors = [], []

    def work(calls):
        try:
            barrier.wait()
            for start, bs, labels, exits in calls:
                got = predict(x[start:start + bs], ts)
                if not (numpy.array_equal(got[0], labels) and numpy.array_equal(got[1], exits)):
                    wrong.append((start, bs))
        except BaseException as e:  # raised in the test's thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    assert not wrong, '{} of {} calls answered otherwise than net.predict: {}'.format(
        len(wrong), THREADS * CALLS, wrong[:5])


def test_chainer(lenet):
    net = lenet[0]
    assert_threads_answer_as_predict(net.predict, lenet)
    assert_threads_answer_as_predict(net.chainer_engine().predict, lenet)


def test_fast(lenet):
    assert_threads_answer_as_predict(FastBranchyNet(lenet[0]).predict, lenet)


@pytest.mark.parametrize('threads', [1, 2])
def test_numba(lenet, threads):
    numbapath = pytest.importorskip('branchynet.engines.numba')
    engine = numbapath.NumbaBranchyNet(lenet[0], threads=threads)
    assert_threads_answer_as_predict(engine.predict, lenet)


def test_numba_through_the_fast_path(lenet, monkeypatch):
    """A measure the native code does not decide routes through the fast
    path's steps (``NumbaBranchyNet.route``); it too is shared safely."""
    numbapath = pytest.importorskip('branchynet.engines.numba')
    e = confidence.MEASURES['entropy']
    monkeypatch.setitem(confidence.MEASURES, 'my_entropy', confidence.Measure(
        'my_entropy', 'entropy < T', None, e.scores, e.row_score, e.limit, e.stay_all,
        e.leave_all))
    net = lenet[0].copy(mode='copy')
    net.confidence = 'my_entropy'
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    assert engine._decision(lenet[2])[0] is None  # decided in Python
    assert_threads_answer_as_predict(engine.predict, lenet)


@pytest.mark.parametrize('form', ['graph', 'sessions'])
def test_onnx_runtime(lenet, form):
    onnxpath = pytest.importorskip('branchynet.engines.onnx_runtime')
    assert_threads_answer_as_predict(onnxpath.OnnxBranchyNet(lenet[0], form=form).predict,
                                     lenet)


def test_bundle(lenet, tmp_path):
    pytest.importorskip('onnxruntime')
    from branchynet.engines import deploy
    deploy.save_bundle(lenet[0], tmp_path / 'bundle')
    assert_threads_answer_as_predict(deploy.load_bundle(tmp_path / 'bundle').predict, lenet)


def test_overlapping_calls_restore_the_blas_thread_count(monkeypatch):
    """The numba path runs the BLAS on one thread while a call is inside
    (``blas_limit(1)``, process-wide, saving and restoring the count). Calls
    overlapping on threads: the first in sets it and the last out restores
    it. Before, each call saved and restored on its own, so call A out while
    B ran gave B a multithreaded BLAS, and B out left it at one thread."""
    numba_engine = pytest.importorskip('branchynet.engines.numba.engine')
    blas = {'threads': 8}

    class Limit:  # threadpoolctl's limit: saves the count on entry, restores it on exit
        def __init__(self, threads):
            self.threads = threads

        def __enter__(self):
            self.saved, blas['threads'] = blas['threads'], self.threads

        def __exit__(self, *exc):
            blas['threads'] = self.saved

    monkeypatch.setattr(numba_engine, 'blas_limit', Limit)
    a, b = numba_engine._one_blas_thread(), numba_engine._one_blas_thread()
    a.__enter__()
    b.__enter__()
    assert blas['threads'] == 1
    a.__exit__(None, None, None)
    assert blas['threads'] == 1  # b still inside
    b.__exit__(None, None, None)
    assert blas['threads'] == 8
