"""Shared set-up for the benchmarks: model, data, argument parsing, output.

Every benchmark prints its measurements side by side from one run and ends
with one line of ``key=value`` pairs. ``--quick`` trains a small B-LeNet on
an MNIST subset in seconds instead of loading ``_models/lenet_mnist.npz``.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import branchynet  # noqa: E402,F401  (compatibility shims before chainer)
import numpy  # noqa: E402

from branchynet.evaluation import measurement, tradeoff  # noqa: E402
from branchynet.io import fileio  # noqa: E402
from branchynet.training import loop as training  # noqa: E402
from branchynet.training.runtime import tune_allocator  # noqa: E402
from branchynet.validation import InputError  # noqa: E402

# The allocator setting the driver uses (faster training; joint_epoch.py's
# comparisons run in child processes that decide it for themselves).
tune_allocator()

DEFAULT_MODEL = os.path.join(ROOT, '_models', 'lenet_mnist.npz')


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--quick', action='store_true',
                   help='a small model trained on an MNIST subset, few samples (< 1 min)')
    p.add_argument('--model', default=None,
                   help='B-LeNet weights (npz); default _models/lenet_mnist.npz')
    p.add_argument('--samples', type=int, default=None, help='test samples to time on')
    return p


def mnist():
    from datasets import mnist as loader
    return loader.get_data()


def lenet(args, data=None):
    """A trained B-LeNet: --model, the default model, or (--quick) a small one."""
    from networks import lenet_mnist
    net = lenet_mnist.get_network()
    path = args.model or (None if args.quick else DEFAULT_MODEL)
    if path:
        if not os.path.exists(path):
            sys.exit('no model at {}: run ./get_results.sh first, pass --model, or use '
                     '--quick'.format(path))
        try:
            return fileio.load_npz(path, net)
        except InputError as e:
            sys.exit('error: {}'.format(e))
    x_train, y_train, _, _ = data or mnist()
    numpy.random.seed(0)
    training.train_exits(net, x_train[:6000], y_train[:6000], main=True, batchsize=128,
                         num_epoch=2, seed=0, progress=False)
    training.train_exits(net, x_train[:6000], y_train[:6000], batchsize=128, num_epoch=2,
                         seed=1, progress=False)
    return net


def test_subset(args, data, quick_n, full_n):
    n = args.samples or (quick_n if args.quick else full_n)
    return data[2][:n], data[3][:n]


def path_threads(threads=None):
    """The threads every path gets: ``threads``, or by default one per core
    (``os.cpu_count()``), the same for each, so that no path is compared with
    more cores than another."""
    return threads or os.cpu_count() or 1


#: path name of each ``OnnxBranchyNet`` form where ``engines`` is asked for forms
ONNX_PATHS = {'sessions': 'onnx-sessions', 'graph': 'onnx-graph'}


def engines(net, chainer=True, threads=None, onnx_forms=None):
    """``[(name, engine)]``: Chainer (unless ``chainer=False``), the fast path
    and, when installed, the ONNX Runtime path and the numba path. Every path
    gets ``path_threads(threads)`` threads: ONNX Runtime's intra-op threads,
    the numba path's workers, and (set with ``blas_threads``, same default)
    the BLAS threads of Chainer and the fast path; printed. ``onnx_forms``:
    the ``OnnxBranchyNet`` forms timed, each a path named by ``ONNX_PATHS``
    ('onnx-sessions': one session per exit, 'onnx-graph': the early-exit
    graph); None: one path 'onnx', the engine's default form."""
    from branchynet.engines.fast import FastBranchyNet
    n = path_threads(threads)
    print('threads: {} on every path (Chainer and fast: numpy\'s BLAS; ONNX Runtime: '
          'intra-op threads; numba: its worker threads){}'.format(
              n, '' if threads else ', one per core (--threads to change)'))
    found = [('chainer', net)] if chainer else []
    found.append(('fast', FastBranchyNet(net)))
    try:
        from branchynet.engines.onnx_runtime import OnnxBranchyNet
        if onnx_forms is None:
            found.append(('onnx', OnnxBranchyNet(net, threads=n)))
        for form in onnx_forms or ():
            found.append((ONNX_PATHS[form], OnnxBranchyNet(net, threads=n, form=form)))
    except ImportError as e:
        print('onnx path skipped: {}'.format(e))
    try:
        from branchynet.engines.numba import NumbaBranchyNet
        engine = NumbaBranchyNet(net, threads=n)
        print('numba path: compiled (or loaded from its cache) in {:.1f} s'.format(
            engine.compile_seconds))
        found.append(('numba', engine))
    except ImportError as e:
        print('numba path skipped: {}'.format(e))
    return found


def blas_threads(threads=None):
    """A context holding numpy's BLAS to ``path_threads(threads)`` threads
    (by default one per core, as every other path)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(path_threads(threads))


def peak_gmacs(n=2048, rounds=5):
    """This CPU's float32 multiply-add rate (G/s): the best of ``rounds``
    ``n x n`` matrix products through numpy's BLAS, on all its threads."""
    a = numpy.random.RandomState(0).rand(n, n).astype(numpy.float32)
    b = a.T.copy()
    a @ b
    best = min(timed(numpy.matmul, a, b)[1] for _ in range(rounds))
    return n ** 3 / best / 1e9


def load():
    """The 1-minute load average (what else the cores were running)."""
    return os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')


def knee_point(net, x, y):
    """The knee of LeNet's 17-value grid on ``(x, y)``, chosen as the driver
    chooses it: the screened record (thresholds, acc, exit_counts, ...)."""
    from branchynet.evaluation import screening
    from networks.lenet_mnist import EXPERIMENT
    base = measurement.measure_main(net, x, y, trunk_only=False)
    records, _ = screening.screen_cached(net, x, y, EXPERIMENT['thresholds'], cost_samples=100)
    point = records[tradeoff.select_knee([r['acc'] for r in records],
                                      [r['ms_chainer'] for r in records], base['acc'])]
    print('knee T={} acc={:.4f} (baseline {:.4f}) exits={}'.format(
        point['thresholds'], point['acc'], base['acc'], point['exit_counts']))
    return point


def timed(fn, *a, **k):
    start = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - start


def summary(**values):
    """The closing ``key=value`` line."""
    print(' '.join('{}={:.4g}'.format(k, v) if isinstance(v, float) else '{}={}'.format(k, v)
                   for k, v in values.items()))


def same_as_predict(net, engine, x, thresholds, want=None):
    """Whether ``engine``, asked one sample at a time (batch size 1), gives
    exactly ``net.predict``'s labels and exits on ``x`` at ``thresholds``.
    ``want``: ``net.predict(x, thresholds)`` where already computed."""
    labels, exits = net.predict(x, thresholds) if want is None else want
    got = [engine.predict(x[i:i + 1], thresholds) for i in range(len(x))]
    return (numpy.array_equal(numpy.concatenate([g[0] for g in got]), labels) and
            numpy.array_equal(numpy.concatenate([g[1] for g in got]), exits))


def best_latencies(net, x, y, paths, settings, rounds):
    """Batch-1 ms per sample, end to end, of every path (``(name, engine)``) under
    every setting (``name -> thresholds``, None for the main network): the
    fastest of ``rounds`` rounds, paths and settings interleaved within each
    round so that a passing load spike cannot bias one of them."""
    ms = {}
    for _ in range(rounds):
        for name, engine in paths:
            for setting, ts in settings.items():
                r = measurement.measure_main(net, x, y, engine=engine, trunk_only=False) \
                    if ts is None else \
                    measurement.measure_branchy(net, x, y, ts, engine=engine, trunk_only=False)
                ms[name, setting] = min(ms.get((name, setting), float('inf')), r['ms'])
    return ms


def train_main(module, config, x, y, seed):
    """A fresh network of ``module`` with its main network alone trained as
    the driver's main phase trains it: ``config``'s main epochs and batch
    size, Adam, ``seed``."""
    from branchynet import utils
    numpy.random.seed(seed)
    net = module.get_network()
    utils.train(net, x, y, main=True, batchsize=config['batchsize'],
                num_epoch=config['epochs_main'], seed=seed)
    return net
