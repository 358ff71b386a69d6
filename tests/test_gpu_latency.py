"""benchmarks/gpu_latency.py: its graph path decides as ``predict`` does, its
capture-safe product is a product, and the script refuses cleanly where it
cannot run. The CUDA parts are marked ``gpu`` (skipped without a device)."""
import os
import subprocess
import sys

import numpy
import pytest

from branchynet import entropy, utils
from branchynet.devices import gpu_usable
from networks import lenet_mnist
from tests.helpers import benchmark_module, make_three_exit_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'gpu_latency.py')


@pytest.fixture(scope='module')
def bench():
    with benchmark_module('gpu_latency') as module:
        yield module


def _lenet():
    numpy.random.seed(0)
    net = lenet_mnist.get_network()
    rng = numpy.random.RandomState(0)
    for _ in range(2):
        net.train(rng.rand(16, 1, 28, 28).astype(numpy.float32),
                  rng.randint(0, 10, 16).astype(numpy.int32))
    return net


def _check_against_predict(bench, net, x):
    graph = bench.GraphBranchyNet(net)
    ents = [numpy.sort(entropy(sm)) for sm in net.get_SM(x)][:-1]
    for i in (-1, len(x) // 3, 2 * len(x) // 3, len(x) - 1):
        # thresholds halfway between two samples' entropies (none within rounding)
        ts = [float(e[0] / 2 if i < 0 else e[-1] + 1 if i == len(x) - 1
                    else (e[i] + e[i + 1]) / 2) for e in ents]
        labels, exits = graph.predict(x, ts, batchsize=1)
        exp_labels, exp_exits = net.predict(x, ts, batchsize=1)
        numpy.testing.assert_array_equal(exits, exp_exits)
        numpy.testing.assert_array_equal(labels, exp_labels)
    numpy.testing.assert_array_equal(graph.predict_main(x, batchsize=1), net.predict_main(x))
    # the timing loop sends every sample into the static input buffer
    y = numpy.zeros(len(x), numpy.int32)
    r = utils.measure_branchy(net, x, y, ts, engine=graph, trunk_only=False)
    assert r['exit_counts'] == numpy.bincount(exp_exits, minlength=net.numexits()).tolist()
    return graph


@pytest.mark.parametrize('make', [make_three_exit_net, _lenet], ids=['three_exit', 'lenet'])
def test_replayed_steps_decide_as_predict_on_the_cpu(bench, make):
    """On the CPU the graph path replays each step into static buffers: the
    same chaining of buffers from exit to exit as the CUDA graphs."""
    net = make()
    shape = net.input_shape
    x = numpy.random.RandomState(1).rand(12, *shape).astype(numpy.float32)
    _check_against_predict(bench, net, x)


def test_graph_path_refuses_batches_and_wrong_shapes(bench):
    net = make_three_exit_net()
    graph = bench.GraphBranchyNet(net)
    x = numpy.zeros((3, 1, 8, 8), numpy.float32)
    with pytest.raises(ValueError, match='batch size 1'):
        graph.route(x, [0.1, 0.1])
    with pytest.raises(ValueError, match='one sample of shape'):
        graph.send(x)


def test_capture_safe_arrays_delegate_to_the_array_module(bench):
    xs = bench.CaptureSafeArrays(numpy)
    assert xs.float32 is numpy.float32 and xs.lib is numpy.lib
    a = numpy.random.RandomState(0).rand(7, 5).astype(numpy.float32)
    b = numpy.random.RandomState(1).rand(5, 3).astype(numpy.float32)
    out = numpy.empty((7, 3), numpy.float32)
    assert xs.matmul(a, b, out=out) is out
    numpy.testing.assert_allclose(out, a @ b, rtol=1e-6)


def _run_main(bench, monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, 'argv', ['gpu_latency.py'] + list(args))
    with pytest.raises(SystemExit) as e:
        bench.main()
    return e.value.code, capsys.readouterr().err


@pytest.mark.skipif(gpu_usable(), reason='a GPU is usable here: the refusal cannot happen')
def test_script_refuses_without_a_gpu(bench, monkeypatch, capsys):
    code, err = _run_main(bench, monkeypatch, capsys, '--quick')
    assert code == 2
    assert 'no CUDA GPU is usable' in err and '--device cpu' in err


def test_script_runs_as_a_script_and_refuses_or_checks_its_arguments():
    result = subprocess.run([sys.executable, SCRIPT, '--rounds', '0'], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and '--rounds must be at least 1' in result.stderr


@pytest.mark.parametrize('args,expected', [(['--rounds', '0'], '--rounds must be at least 1'),
                                           (['--samples', '0'], '--samples must be at least 1'),
                                           (['--device', 'tpu'], 'invalid choice')])
def test_script_rejects_bad_arguments(bench, monkeypatch, capsys, args, expected):
    code, err = _run_main(bench, monkeypatch, capsys, *args)
    assert code == 2
    assert expected in err


# ---------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not gpu_usable(), reason='CuPy sees no CUDA device')


@pytest.mark.gpu
@gpu
def test_capture_safe_matmul_matches_cupy_on_strided_inputs(bench):
    import cupy
    xs = bench.CaptureSafeArrays(cupy)
    rng = numpy.random.RandomState(0)
    a = cupy.asarray(rng.rand(126, 1020).astype(numpy.float32)).T  # strided, as im2col's
    b = cupy.asarray(rng.rand(126, 10).astype(numpy.float32))
    out = cupy.empty((1020, 10), numpy.float32)
    xs.matmul(a, b, out=out)
    numpy.testing.assert_allclose(cupy.asnumpy(out), cupy.asnumpy(a) @ cupy.asnumpy(b),
                                  rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize('make', [make_three_exit_net, _lenet], ids=['three_exit', 'lenet'])
def test_cuda_graph_path_decides_as_predict(bench, make):
    net = make()
    net.to_device('@cupy:0')
    x = numpy.random.RandomState(1).rand(12, *net.input_shape).astype(numpy.float32)
    _check_against_predict(bench, net, x)
