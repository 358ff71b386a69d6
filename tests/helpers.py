"""Builders shared by the tests (imported as ``tests.helpers``; fixtures stay in conftest)."""
import contextlib
import importlib
import io
import os
import pickle
import sys
import tarfile

import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import FL, Branch, BranchyNet, entropy

#: the repository's root folder
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def benchmark_module(name):
    """``benchmarks/<name>.py`` imported (its own imports need ``benchmarks/``
    on ``sys.path``, which is restored afterwards)."""
    folder = os.path.join(ROOT, 'benchmarks')
    sys.path.insert(0, folder)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(folder)


def assert_engine_matches_predict(engine, net, x, seed=2):
    """``engine``'s labels and exits equal ``net.predict``'s for random
    thresholds within each exit's entropy range, at batch sizes 1, 5 and the
    default, and its main-network labels equal ``net.predict_main``'s."""
    ents = [entropy(sm) for sm in net.get_SM(x)][:-1]
    rng = numpy.random.RandomState(seed)
    for _ in range(3):
        ts = [float(rng.uniform(e.min(), e.max())) for e in ents]
        for bs in (1, 5, None):
            labels, exits = engine.predict(x, ts, batchsize=bs)
            exp_labels, exp_exits = net.predict(x, ts, batchsize=bs)
            numpy.testing.assert_array_equal(labels, exp_labels)
            numpy.testing.assert_array_equal(exits, exp_exits)
    numpy.testing.assert_array_equal(engine.predict_main(x), net.predict_main(x))


def make_three_exit_net(seed=0, **kwargs):
    """A small 3-exit convolutional BranchyNet on 1x8x8 inputs."""
    numpy.random.seed(seed)
    network = [
        L.Convolution2D(1, 4, 3, pad=1),
        Branch([FL(F.relu), L.Linear(4 * 8 * 8, 5)]),
        FL(F.relu), L.Convolution2D(4, 6, 3, pad=1), FL(F.max_pooling_2d, 2, 2),
        Branch([FL(F.relu), L.Linear(6 * 4 * 4, 5)]),
        FL(F.relu), L.Linear(6 * 4 * 4, 16), FL(F.relu),
        Branch([L.Linear(16, 5)]),
    ]
    return BranchyNet(network, input_shape=(1, 8, 8), **kwargs)


def write_official_tarball(path, n_per_batch=6, seed=0):
    """A tarball in the official python format (protocol-2 pickles of dicts
    with bytes keys, as Python 2 wrote them), random pixels, known labels."""
    from datasets import cifar10
    rng = numpy.random.RandomState(seed)
    truth = {}
    with tarfile.open(path, 'w:gz') as tar:
        for name in cifar10.TRAIN_BATCHES + cifar10.TEST_BATCHES:
            data = rng.randint(0, 256, size=(n_per_batch, 3072)).astype(numpy.uint8)
            labels = [int(v) for v in rng.randint(0, 10, n_per_batch)]
            truth[name] = (data, labels)
            raw = pickle.dumps({b'batch_label': name.encode(), b'labels': labels,
                                b'data': data, b'filenames': [b'x.png'] * n_per_batch},
                               protocol=2)
            info = tarfile.TarInfo('cifar-10-batches-py/' + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return truth


def results_record(network, title, acc):
    """A minimal ``<network>_results.json`` record with one Table I row pair."""
    row = {'Device': 'CPU', 'Network': title, 'Acc. (%)': acc, 'Time (ms)': 1.0}
    return {'network': network, 'title': title, 'seed': 0,
            'config': {'preset': 'tiny', 'epochs_main': 1, 'epochs_joint': 1, 'batchsize': 8,
                       'dataset': 'mnist'},
            'data': {'n_train': 10, 'n_test': 10, 'n_timing': 10},
            'training': {'epoch_seconds_main': 1.0, 'epoch_seconds_joint': 1.0},
            'test': {'exit_accs_after_joint': [0.5]}, 'environment': {'python': '3'},
            'tables': {'CPU': [row, dict(row, Network='B-' + title)]}}


def untrusted_record(path, kind):
    """A file at ``path`` that no reader of a small JSON record may trust:
    'deep' (a list nested 100,000 deep), 'fifo' (a named pipe nobody writes
    to: a blocking open waits forever) or 'zero' (a symbolic link to
    /dev/zero: reading it never ends)."""
    path = str(path)
    if kind == 'deep':
        with open(path, 'w') as f:
            f.write('[' * 100000 + ']' * 100000)
    elif kind == 'fifo':
        os.mkfifo(path)
    else:
        os.symlink('/dev/zero', path)


def limit_memory(extra=2 ** 30):
    """Let this process's address space grow by at most ``extra`` bytes more,
    so an unbounded read fails with MemoryError instead of exhausting the
    machine (for a subprocess checking that a reader is bounded)."""
    import resource
    with open('/proc/self/status') as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmSize:'))
    resource.setrlimit(resource.RLIMIT_AS,
                       (size + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))


def run_python(script, env=None, timeout=120):
    """``python -c script`` from the repository root (with its folder first on
    ``sys.path``); the finished process."""
    import subprocess
    return subprocess.run([sys.executable, '-c', 'import sys; sys.path.insert(0, {!r})\n'
                           .format(ROOT) + script], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


def run_on_kernel(layer, x, node_class):
    """``cpukernels.run_layer(layer, x)`` in training mode, checked to have
    been taken by the kernels and to run as a ``node_class`` node."""
    import chainer
    from branchynet.links import cpukernels
    with chainer.using_config('train', True):
        assert cpukernels.applies(layer, x.array)
        y = cpukernels.run_layer(layer, x)
    assert isinstance(y.creator, node_class)
    return y


def forward_backward(fn, arrays, no_grad=(), **kwargs):
    """``[y, grad of each input]`` of ``fn(*arrays, **kwargs)`` with a fixed
    output gradient (cosines), for comparing kernels with Chainer's functions;
    the inputs at the positions ``no_grad`` want no gradient (their entry None)."""
    import chainer
    variables = [chainer.Variable(a.copy(), requires_grad=i not in no_grad)
                 for i, a in enumerate(arrays)]
    y = fn(*variables, **kwargs)
    y.grad = numpy.cos(numpy.arange(y.size, dtype=numpy.float32)).reshape(y.shape)
    y.backward()
    return [y.array] + [v.grad for v in variables]


def random_dataset_npz(path, n_train, n_test=40, shape=(1, 28, 28), seed=0):
    """A dataset file for ``--dataset``/``dataset_path`` (keys ``train_x``,
    ``train_y``, ``test_x``, ``test_y``): uniform images and labels 0..9."""
    rng = numpy.random.RandomState(seed)
    numpy.savez(path, train_x=rng.rand(n_train, *shape).astype(numpy.float32),
                train_y=rng.randint(0, 10, n_train).astype(numpy.int32),
                test_x=rng.rand(n_test, *shape).astype(numpy.float32),
                test_y=rng.randint(0, 10, n_test).astype(numpy.int32))
    return str(path)
