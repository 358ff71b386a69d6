"""Training with the CPU kernels ends where training with Chainer's functions ends."""
import contextlib

import numpy
import pytest

import branchynet  # noqa: F401
import chainer.functions as F
import chainer.links as L

from branchynet import FL, Branch, BranchyNet
from branchynet.links import batchnorm, cpukernels, directconv
from networks import resnet_cifar10


#: Plain momentum SGD: a weight's difference then follows its gradient's. Adam's
#: first steps move every weight by about its step size whatever the gradient's
#: size, so a gradient that is rounding noise on both paths (e.g. a bias before
#: batch normalisation) would differ by a whole step.
SGD = {'opt': 'MomentumSGD', 'lr': 0.01}


def _small_alexnet_like():
    return BranchyNet([
        L.Convolution2D(3, 8, 3, pad=1), FL(F.relu), FL(F.max_pooling_2d, 3, 2),
        # no bias before batch normalisation: its true gradient is 0, and Adam turns
        # the rounding noise of either path into full-size steps
        L.Convolution2D(8, 16, 3, pad=1, nobias=True), L.BatchNormalization(16), FL(F.relu),
        Branch([L.Convolution2D(16, 8, 3, pad=1), FL(F.relu), L.Linear(None, 10)]),
        L.Convolution2D(16, 16, 5, pad=2), FL(F.relu), FL(F.max_pooling_2d, 2),
        Branch([L.Linear(None, 10)]),
    ], input_shape=(3, 12, 12), **SGD)


def _train(make, use_kernels, steps=3, batch=6):
    numpy.random.seed(0)
    net = make()
    shape = net.input_shape
    rng = numpy.random.RandomState(1)
    x = rng.rand(batch, *shape).astype(numpy.float32)
    t = rng.randint(0, 10, batch).astype(numpy.int32)
    net.training()
    with contextlib.nullcontext() if use_kernels else cpukernels.disabled():
        for main in [True] * steps + [False] * steps:
            (net.train_main if main else net.train)(x, t)
    return {name: p.array.copy() for name, p in net.namedparams()}


@pytest.mark.parametrize('make,atol', [
    (_small_alexnet_like, 1e-4),
    (lambda: resnet_cifar10.get_network(blocks_per_stage=1, **SGD), 1e-3),
], ids=['alexnet_like', 'resnet_1_block'])
def test_a_short_training_run_ends_with_the_same_weights(make, atol):
    ours, theirs = _train(make, True), _train(make, False)
    assert ours.keys() == theirs.keys()
    # 6 steps from the same start; float32 summation order differs. Some of the
    # 1-block B-ResNet's gradients are sums with heavy cancellation: its first
    # block's bn1/beta gradient moves by 0.7 % between Chainer's functions and
    # the earlier GEMM convolution alone (which only sums in another order), and
    # weights of about 0.05 end up to 3.5e-4 apart after the 6 steps.
    for name in ours:
        numpy.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=atol,
                                      err_msg=name)


def test_the_kernels_run_in_a_residual_network(monkeypatch):
    seen = []
    for cls in (directconv.DirectConvolution2D, batchnorm.BatchNormalizationCPU):
        original = cls.forward

        def spy(self, inputs, original=original):
            seen.append(type(self))
            return original(self, inputs)
        monkeypatch.setattr(cls, 'forward', spy)
    _train(lambda: resnet_cifar10.get_network(blocks_per_stage=1), True, steps=1, batch=2)
    assert directconv.DirectConvolution2D in seen and batchnorm.BatchNormalizationCPU in seen


@pytest.mark.parametrize('layer', [
    L.Convolution2D(16, 16, 3, pad=1),                        # directconv (Winograd)
    L.Convolution2D(3, 8, 5, pad=2),                          # a first layer on the images
    FL(F.max_pooling_2d, 3, 2),
    FL(F.local_response_normalization, n=3, k=2, alpha=5e-5, beta=0.75),
    FL(F.average_pooling_2d, 2),
], ids=['conv3x3', 'conv-first', 'maxpool', 'lrn', 'avgpool'])
def test_run_frozen_computes_test_mode_on_the_kernels(monkeypatch, layer):
    """A frozen trunk's layers (``placement``) give test mode's outputs, on
    the kernels: float32 rounding apart, Chainer's own functions' values."""
    import chainer
    rng = numpy.random.RandomState(0)
    channels = 3 if getattr(layer, 'W', None) is not None and layer.W.shape[1] == 3 else 16
    x = rng.randn(4, channels, 12, 12).astype(numpy.float32)
    kernels = []
    for name in ('convolution_2d', 'max_pooling_2d', '_local_response_normalization',
                 '_average_pooling_2d'):
        monkeypatch.setattr(cpukernels, name, lambda *a, _f=getattr(cpukernels, name), **k:
                            kernels.append(_f) or _f(*a, **k))
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        want = layer(x).array
        got = cpukernels.run_frozen(layer, x).array
        assert chainer.config.train is False  # the caller's mode is left as it was
    numpy.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * max(1., abs(want).max()))
    assert len(kernels) == 1, 'the layer did not run on the kernels'


def test_run_frozen_leaves_batch_normalisation_dropout_and_sl_to_chainer():
    import chainer
    from branchynet import SL
    rng = numpy.random.RandomState(1)
    x = rng.randn(4, 16, 6, 6).astype(numpy.float32)
    bn = L.BatchNormalization(16)
    bn.avg_mean[:] = rng.randn(16)
    dropout = FL(F.dropout, 0.5)
    # an SL names its training function fn but holds no arguments: identity in test mode
    switched = SL(FL(F.local_response_normalization))
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        numpy.testing.assert_array_equal(cpukernels.run_frozen(bn, x).array, bn(x).array)
        numpy.testing.assert_array_equal(cpukernels.run_frozen(dropout, x).array, x)
        numpy.testing.assert_array_equal(cpukernels.run_frozen(switched, x), x)


def test_an_sl_of_a_kernel_function_trains_as_chainer_computes_it():
    """Regression: an ``SL`` wrapping a pooling or LRN function (it has ``fn``
    but no ``args``) made ``applies`` fail with AttributeError."""
    import chainer
    from branchynet import SL
    x = numpy.random.RandomState(2).randn(2, 8, 6, 6).astype(numpy.float32)
    layer = SL(F.local_response_normalization)
    assert not cpukernels.applies(layer, x)
    with chainer.using_config('train', True):
        numpy.testing.assert_array_equal(cpukernels.run_layer(layer, x).array,
                                         F.local_response_normalization(x).array)
