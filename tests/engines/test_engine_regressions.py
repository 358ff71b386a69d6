"""The smallest networks on which the generated-network tests
(tests/engines/test_engine_fuzz.py) found an engine, or ``predict`` itself, wrong.

Each test is one bug, kept as a regression test with the smallest network
that showed it; each failed before its fix (the failure is in its docstring
or comment).
"""
import math

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from branchynet import FL, SL, Branch, BranchyNet
from branchynet.engines.fast import FastBranchyNet
from tests import netgen


def _x(shape, n=64, seed=0):
    return numpy.random.RandomState(seed).randn(n, *shape).astype(numpy.float32)


def _net(network, shape, seed=0):
    numpy.random.seed(seed)
    net = BranchyNet(network(), input_shape=shape)
    netgen.randomize(net, numpy.random.RandomState(seed + 1))
    return net


def _numba(net):
    pytest.importorskip('numba')
    from branchynet.engines import numba as numbapath
    return numbapath.NumbaBranchyNet(net, threads=2)


def _onnx(net):
    pytest.importorskip('onnxruntime')
    from branchynet.engines import onnx_runtime as onnxpath
    return onnxpath.OnnxBranchyNet(net)


def assert_labels_at_every_exit(engine, net, x):
    """With every sample sent out at exit k (thresholds 0 before it, infinity
    from it on), the engine's labels are the arg-max of ``net``'s exit-k logits
    (samples whose two largest logits tie within the tolerance left out), and
    its ``predict_main`` is ``net.predict_main``."""
    with chainer.using_config('train', False):
        logits = net.get_logits(x)
    early = net.numexits() - 1
    for k, z in enumerate(logits):
        labels, exits = engine.predict(x, [0.0] * k + [math.inf] * (early - k))
        assert (exits == k).all()
        wrong = (labels != z.argmax(axis=1)) & ~netgen.tie_mask(z)
        assert not wrong.any(), 'exit {}: {} of {} labels differ'.format(k, wrong.sum(), len(x))
    numpy.testing.assert_array_equal(engine.predict_main(x), net.predict_main(x))


# ------------------------------------------------- predict: empty trunk segments
def _predict_runs(network, shape):
    net = _net(network, shape)
    x = _x(shape, 8)
    early = net.numexits() - 1
    for k in range(early + 1):  # every exit: reaches the empty segment
        labels, exits = net.predict(x, [0.0] * k + [math.inf] * (early - k))
        assert (exits == k).all()


#: Before the fix: AttributeError: 'numpy.ndarray' object has no attribute
#: 'array' (engine.py, net.segment(h, n).array).


def test_exit_as_the_first_layer():
    _predict_runs(lambda: [Branch([L.Linear(16, 3)]),
                           L.Convolution2D(1, 2, 3, pad=1),
                           Branch([L.Linear(32, 3)])], (1, 4, 4))


def test_two_exits_at_one_point():
    _predict_runs(lambda: [L.Convolution2D(1, 2, 3, pad=1),
                           Branch([L.Linear(32, 3)]),
                           Branch([L.Linear(32, 3)]),
                           L.Convolution2D(2, 2, 3, pad=1),
                           Branch([L.Linear(32, 3)])], (1, 4, 4))


def test_exit_just_before_the_final_head():
    _predict_runs(lambda: [L.Convolution2D(1, 2, 3, pad=1),
                           Branch([L.Linear(32, 3)]),
                           Branch([L.Linear(32, 3)])], (1, 4, 4))


def test_head_sharing_every_layer_up_to_the_next_exit():
    # the head's ReLU is the trunk's next layer: it runs in the trunk, and the
    # segment after the exit is left empty
    _predict_runs(lambda: [L.Convolution2D(1, 2, 3, pad=1),
                           Branch([FL(F.relu), L.Linear(32, 3)]),
                           FL(F.relu),
                           Branch([L.Linear(32, 3)])], (1, 4, 4))


def test_segment_of_only_test_time_identity_layers():
    _predict_runs(lambda: [L.Convolution2D(1, 2, 3, pad=1),
                           Branch([L.Linear(32, 3)]),
                           SL(FL(F.dropout)),
                           Branch([L.Linear(32, 3)])], (1, 4, 4))


# ------------------------------------------------- fast path
# before the fix: ValueError, the fast path broadcast BatchNormalization of a
# Linear's (N, K) output as (1, K, 1, 1): matmul shape mismatch
def test_fast_batchnorm_after_linear():
    net = _net(lambda: [L.Linear(16, 4), L.BatchNormalization(4),
                        Branch([L.Linear(4, 3)]),
                        FL(F.relu),
                        Branch([L.Linear(4, 3)])], (1, 4, 4))
    assert_labels_at_every_exit(FastBranchyNet(net), net, _x((1, 4, 4)))


# before the fix: every batch's logits were one reused buffer (all the last batch's)
def test_fast_exit_logits_in_several_batches():
    net = _net(lambda: [L.Convolution2D(1, 2, 3, pad=1),
                        Branch([L.Linear(32, 3)]),
                        FL(F.relu),
                        Branch([L.Linear(32, 3)])], (1, 4, 4))
    x = _x((1, 4, 4), 6)
    for z, expected in zip(FastBranchyNet(net).exit_logits(x, batchsize=2), net.get_logits(x)):
        numpy.testing.assert_allclose(z, expected, rtol=netgen.RTOL, atol=1e-5)


# ------------------------------------------------- numba
#: Before the fix: wrong labels (a reader assumed another layout, margin or
#: packed, than the writer used).


def test_numba_linear_head_reads_pooled_value_with_margin():
    # issue 21's case: the pooled value gets a margin for the padded convolution
    net = _net(lambda: [L.Convolution2D(1, 4, 3, pad=1), FL(F.relu), FL(F.max_pooling_2d, 2, 2),
                        Branch([L.Linear(4 * 4 * 4, 10)]),
                        L.Convolution2D(4, 4, 3, pad=1), FL(F.relu),
                        Branch([L.Linear(4 * 4 * 4, 10)])], (1, 8, 8))
    assert_labels_at_every_exit(_numba(net), net, _x((1, 8, 8)))


def test_numba_linear_head_reads_residual_output_with_margin():
    from networks.resnet_cifar10 import ResBlock
    net = _net(lambda: [L.Convolution2D(3, 4, 3, pad=1), ResBlock(4, 4),
                        Branch([L.Linear(4 * 8 * 8, 4)]),
                        ResBlock(4, 4),
                        Branch([L.Linear(4 * 8 * 8, 4)])], (3, 8, 8))
    assert_labels_at_every_exit(_numba(net), net, _x((3, 8, 8)))


def test_numba_strided_convolution_read_with_padding():
    # no early head involved: the trunk itself is wrong (predict_main too)
    net = _net(lambda: [L.Convolution2D(1, 4, 3, stride=2),
                        L.Convolution2D(4, 4, 3, pad=1),
                        Branch([L.Linear(4 * 3 * 3, 4)]),
                        FL(F.relu),
                        Branch([L.Linear(4 * 3 * 3, 4)])], (1, 8, 8))
    assert_labels_at_every_exit(_numba(net), net, _x((1, 8, 8)))


def test_numba_strided_residual_block():
    # ResBlock(stride=2): its first convolution is strided, its second padded
    from networks.resnet_cifar10 import ResBlock
    net = _net(lambda: [L.Convolution2D(3, 4, 3, pad=1), ResBlock(4, 6, stride=2),
                        Branch([L.Linear(6 * 4 * 4, 4)]),
                        FL(F.relu),
                        Branch([L.Linear(6 * 4 * 4, 4)])], (3, 8, 8))
    assert_labels_at_every_exit(_numba(net), net, _x((3, 8, 8)))


# the same networks on the engines that get them right today: guards the tests
@pytest.mark.parametrize('make', [FastBranchyNet, _onnx], ids=['fast', 'onnx'])
def test_layout_cases_right_on_other_engines(make):
    from networks.resnet_cifar10 import ResBlock
    for network, shape in [
            (lambda: [L.Convolution2D(1, 4, 3, stride=2), L.Convolution2D(4, 4, 3, pad=1),
                      Branch([L.Linear(36, 4)]), FL(F.relu), Branch([L.Linear(36, 4)])],
             (1, 8, 8)),
            (lambda: [L.Convolution2D(3, 4, 3, pad=1), ResBlock(4, 6, stride=2),
                      Branch([L.Linear(96, 4)]), FL(F.relu), Branch([L.Linear(96, 4)])],
             (3, 8, 8))]:
        net = _net(network, shape)
        assert_labels_at_every_exit(make(net), net, _x(shape))
