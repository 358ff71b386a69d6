"""The CuPy path against the CPU path, on a real GPU.

Every test here is marked ``gpu`` (``pytest -m gpu`` selects them) and is
skipped, with the reason, where CuPy is missing or sees no CUDA device. On a
GPU machine: ``tools/gpu_run.sh python -m pytest -q -m gpu tests``.
"""
import copy
import os
import subprocess
import sys
import time

import chainer
import numpy
import pytest

from branchynet.io import fileio
from branchynet.devices import gpu_usable
from branchynet.engines.fast import FastBranchyNet
from branchynet.measures.timing import StageTimer, synchronize
from networks import alex_cifar10, lenet_mnist, resnet_cifar10
from branchynet.engines.base import ChainerEngine
from tests.helpers import make_three_exit_net


def _no_gpu_reason():
    try:
        import cupy
    except Exception as e:
        return 'CuPy does not import ({}: {})'.format(type(e).__name__, e)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return 'CuPy sees no CUDA device ({}: {})'.format(type(e).__name__, e)
    return None if count > 0 else 'CuPy sees no CUDA device (0 devices)'


NO_GPU = None if gpu_usable() else (_no_gpu_reason() or 'Chainer reports CuPy unavailable')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))]

GPU = '@cupy:0'
SHAPES = {'lenet': (lenet_mnist, (1, 28, 28)), 'alexnet': (alex_cifar10, (3, 32, 32)),
          'resnet': (resnet_cifar10, (3, 32, 32))}


def _pair(module_or_factory, seed=0):
    """The same initial weights on the CPU and (a deep copy) on the GPU."""
    numpy.random.seed(seed)
    cpu = module_or_factory()
    gpu = copy.deepcopy(cpu)
    gpu.to_device(GPU)
    return cpu, gpu


def _params(net):
    return {name: chainer.backends.cuda.to_cpu(p.array) for name, p in net.namedparams()}


def _grads(net):
    return {name: chainer.backends.cuda.to_cpu(p.grad) for name, p in net.namedparams()
            if p.grad is not None}


# ------------------------------------------------------------------ training
@pytest.mark.parametrize('factory', [lenet_mnist.get_network, make_three_exit_net],
                         ids=['lenet', 'three_exit'])
@pytest.mark.parametrize('step', ['train', 'train_main'])
def test_one_training_step_matches_the_cpu(factory, step):
    """Losses agree to rtol 1e-5 and gradients to rtol 1e-3 (atol 1e-6 of the
    largest); the weights moved by Adam's first step (alpha * g / (|g| + eps'),
    at most alpha = 1e-3 per element) agree to 1e-5 (1 % of alpha), except
    where the gradient is below 1e-4 of the largest: there the step amplifies
    float32 rounding, so only |update| <= alpha is required."""
    cpu, gpu = _pair(factory)
    shape = cpu.input_shape
    rng = numpy.random.RandomState(3)
    x = rng.rand(64, *shape).astype(numpy.float32)
    t = rng.randint(0, 5, 64).astype(numpy.int32)
    before = _params(cpu)
    out_cpu = getattr(cpu, step)(x, t)
    out_gpu = getattr(gpu, step)(x, t)
    numpy.testing.assert_allclose(numpy.ravel(out_gpu[0]), numpy.ravel(out_cpu[0]), rtol=1e-5)
    after_cpu, after_gpu = _params(cpu), _params(gpu)
    grads_cpu, grads_gpu = _grads(cpu), _grads(gpu)
    alpha = cpu.alpha
    for name, g in grads_cpu.items():
        scale = float(numpy.abs(g).max()) or 1.0
        numpy.testing.assert_allclose(grads_gpu[name], g, rtol=1e-3, atol=1e-6 * scale,
                                      err_msg=name)
        firm = numpy.abs(g) > 1e-4 * scale
        d_cpu, d_gpu = after_cpu[name] - before[name], after_gpu[name] - before[name]
        numpy.testing.assert_allclose(d_gpu[firm], d_cpu[firm], atol=1e-5, err_msg=name)
        assert numpy.all(numpy.abs(d_gpu) <= alpha * 1.001 + 1e-7), name
    # parameters with no gradient (the heads in train_main) did not move anywhere
    for name in set(after_cpu) - set(grads_cpu):
        numpy.testing.assert_array_equal(after_gpu[name], before[name], err_msg=name)


# ---------------------------------------------------------------- prediction
def _nudged(module, shape, steps):
    """A network whose BatchNorm statistics and weights moved off their initial values."""
    numpy.random.seed(0)
    net = module.get_network()
    rng = numpy.random.RandomState(0)
    for _ in range(steps):
        net.train(rng.rand(8, *shape).astype(numpy.float32),
                  rng.randint(0, 10, 8).astype(numpy.int32))
    return net


def _safe_thresholds(net, x):
    """Per early exit, a threshold in the widest gap between the middle half of
    the samples' entropies: no sample sits within float rounding of it, so the
    CPU and the GPU must route every sample alike."""
    from branchynet import entropy
    ts = []
    for sm in net.get_SM(x)[:-1]:
        e = numpy.sort(entropy(sm))
        lo, hi = len(e) // 4, max(len(e) // 4 + 1, 3 * len(e) // 4)
        gaps = e[lo + 1:hi + 1] - e[lo:hi]
        i = lo + int(numpy.argmax(gaps))
        ts.append(float((e[i] + e[i + 1]) / 2))
    return ts


@pytest.fixture(scope='module', params=sorted(SHAPES))
def cpu_gpu_nets(request):
    module, shape = SHAPES[request.param]
    cpu = _nudged(module, shape, steps=1 if request.param == 'resnet' else 2)
    gpu = copy.deepcopy(cpu)
    gpu.to_device(GPU)
    n = 9 if request.param == 'resnet' else 21
    x = numpy.random.RandomState(1).rand(n, *shape).astype(numpy.float32)
    return cpu, gpu, x, _safe_thresholds(cpu, x)


def _decisive(net, x):
    """Samples whose top two final logits differ by more than 1e-3 (the label
    cannot flip with rounding)."""
    z = numpy.sort(net.get_logits(x)[-1], axis=1)
    return z[:, -1] - z[:, -2] > 1e-3


@pytest.mark.parametrize('batchsize', [1, 7, None])
def test_predict_on_the_gpu_matches_the_cpu(cpu_gpu_nets, batchsize):
    cpu, gpu, x, ts = cpu_gpu_nets
    labels_c, exits_c = cpu.predict(x, ts, batchsize=batchsize)
    labels_g, exits_g = gpu.predict(x, ts, batchsize=batchsize)
    assert isinstance(labels_g, numpy.ndarray) and isinstance(exits_g, numpy.ndarray)
    numpy.testing.assert_array_equal(exits_g, exits_c)
    sure = _decisive(cpu, x)
    numpy.testing.assert_array_equal(labels_g[sure], labels_c[sure])
    numpy.testing.assert_array_equal(gpu.predict_main(x, batchsize)[sure],
                                     cpu.predict_main(x, batchsize)[sure])


@pytest.mark.parametrize('batchsize', [1, 7, None])
def test_fast_path_on_cupy_matches_predict(cpu_gpu_nets, batchsize):
    _, gpu, x, ts = cpu_gpu_nets
    fast = FastBranchyNet(gpu)
    import cupy
    assert fast.xp is cupy
    labels, exits = fast.predict(x, ts, batchsize=batchsize)
    exp_labels, exp_exits = gpu.predict(x, ts, batchsize=batchsize)
    numpy.testing.assert_array_equal(exits, exp_exits)
    numpy.testing.assert_array_equal(labels, exp_labels)
    numpy.testing.assert_array_equal(fast.predict_main(x, batchsize),
                                     gpu.predict_main(x, batchsize))


# -------------------------------------------------------------------- timing
def _big_matmul():
    import cupy
    a = cupy.ones((8192, 8192), numpy.float32)
    return a, lambda: cupy.matmul(a, a)


def test_synchronize_waits_for_the_kernel():
    """``synchronize`` returns only once a queued 8192^3 product is done, and a
    timed stage lasts at least as long as the GPU's own clock says it ran."""
    import cupy
    a, product = _big_matmul()
    product()
    synchronize(cupy)
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    product()
    end.record()
    synchronize(cupy)
    assert end.done
    gpu_ms = cupy.cuda.get_elapsed_time(start, end)
    assert gpu_ms > 1.0, 'the product is too small to tell a launch from a run'
    timer = StageTimer(cupy)
    with timer.stage('product'):
        product()
    assert 1000. * timer.totals['product'] >= 0.9 * gpu_ms
    launch_start = time.perf_counter()
    product()  # not synchronised: only the launch is timed
    launch_ms = 1000. * (time.perf_counter() - launch_start)
    synchronize(cupy)
    print('8192^3 product: GPU clock {:.2f} ms, synchronised stage {:.2f} ms, '
          'launch alone {:.3f} ms'.format(gpu_ms, 1000. * timer.totals['product'], launch_ms))


def test_measurement_loop_includes_the_gpu_work(monkeypatch):
    """``utils.measure_*`` time on the GPU's clock: with a slow product slipped
    into every sample's route, the per-sample time grows by at least the
    product's GPU time."""
    import cupy
    from branchynet import utils
    net = make_three_exit_net()
    net.to_device(GPU)
    x = numpy.random.RandomState(0).rand(5, 1, 8, 8).astype(numpy.float32)
    y = numpy.zeros(5, numpy.int32)
    _, product = _big_matmul()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    product()
    start.record()
    product()
    end.record()
    end.synchronize()
    gpu_ms = cupy.cuda.get_elapsed_time(start, end)
    plain = utils.measure_main(net, x, y, trunk_only=False)['ms']
    route = ChainerEngine.main_route

    def slowed(self, xb, timer):
        product()
        return route(self, xb, timer)
    monkeypatch.setattr(ChainerEngine, 'main_route', slowed)
    slow = utils.measure_main(net, x, y, trunk_only=False)['ms']
    assert slow - plain >= 0.9 * gpu_ms


# ------------------------------------------------------------------ save/load
def test_a_gpu_trained_model_saves_files_that_load_on_a_cpu(tmp_path):
    """The driver saves the model as it trained it (on the GPU); both files
    must load in a process that cannot import CuPy and predict the same."""
    cpu_net, gpu_net = _pair(lenet_mnist.get_network)
    rng = numpy.random.RandomState(0)
    x = rng.rand(32, 1, 28, 28).astype(numpy.float32)
    t = rng.randint(0, 10, 32).astype(numpy.int32)
    gpu_net.train(x, t)
    fileio.save_npz(str(tmp_path / 'm.npz'), gpu_net)
    fileio.save_dill(str(tmp_path / 'm.bn'), gpu_net)
    numpy.save(str(tmp_path / 'x.npy'), x)
    expected = gpu_net.predict(x, [0.5])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = '\n'.join([
        'import sys; sys.modules["cupy"] = None  # no CuPy in this process',
        'sys.path.insert(0, {!r})'.format(root),
        'import numpy, branchynet',
        'from branchynet.io import fileio',
        'from networks import lenet_mnist',
        'd = sys.argv[1]; x = numpy.load(d + "/x.npy")',
        'a = fileio.load_npz(d + "/m.npz", lenet_mnist.get_network())',
        'b = fileio.load_dill(d + "/m.bn", trust=True)',
        'assert b.xp is numpy, "the .bn model does not live on the CPU"',
        'for net in (a, b):',
        '    labels, exits = net.predict(x, [0.5])',
        '    numpy.save(d + "/out_%d.npy" % (net is b), numpy.stack([labels, exits]))',
    ])
    result = subprocess.run([sys.executable, '-c', script, str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for k in (0, 1):
        got = numpy.load(str(tmp_path / 'out_{}.npy'.format(k)))
        numpy.testing.assert_array_equal(got[1], expected[1])
        numpy.testing.assert_array_equal(got[0], expected[0])
