"""The CPU training kernels compute what Chainer's functions compute."""
import contextlib

import hypothesis
import hypothesis.strategies as st
import numpy
import pytest

import branchynet  # noqa: F401
import chainer
import chainer.functions as F
import chainer.links as L

from branchynet import FL, utils
from tests.helpers import forward_backward
from branchynet.links import cpukernels
from branchynet.training import runtime
from branchynet.links import Net



@pytest.mark.parametrize('x_shape,w_shape,stride,pad,bias', [
    ((3, 1, 28, 28), (5, 1, 5, 5), 1, 3, True),
    ((2, 5, 15, 15), (10, 5, 3, 3), 1, 1, True),
    ((2, 3, 17, 13), (4, 3, 5, 3), 2, (1, 2), True),
    ((2, 3, 9, 9), (4, 3, 3, 3), (2, 3), 0, False),
    ((1, 2, 4, 4), (3, 2, 4, 4), 1, 0, True),
])
def test_convolution_matches_chainer(x_shape, w_shape, stride, pad, bias):
    rng = numpy.random.RandomState(0)
    arrays = [rng.randn(*x_shape).astype(numpy.float32), rng.randn(*w_shape).astype(numpy.float32)]
    if bias:
        arrays.append(rng.randn(w_shape[0]).astype(numpy.float32))
    ours = forward_backward(cpukernels.convolution_2d, arrays, stride=stride, pad=pad)
    theirs = forward_backward(F.convolution_2d, arrays, stride=stride, pad=pad)
    assert [a.shape for a in ours] == [a.shape for a in theirs]
    for a, b in zip(ours, theirs):  # summation order differs: float32 rounding only
        numpy.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape,ksize,stride,pad,cover_all', [
    ((2, 3, 30, 30), 2, 2, 0, True),
    ((2, 3, 17, 17), 2, 2, 0, True),   # cover_all adds a partial last window
    ((2, 3, 17, 17), 3, 2, 1, True),   # overlapping windows
    ((2, 3, 16, 15), 3, 2, 0, False),
    ((2, 3, 15, 15), 3, 2, 0, True),
    ((1, 1, 5, 7), (2, 3), (1, 2), (1, 0), True),
])
def test_max_pooling_matches_chainer_exactly(shape, ksize, stride, pad, cover_all):
    rng = numpy.random.RandomState(1)
    x = rng.randn(*shape).astype(numpy.float32)
    x[:, :, :4, :4] = 0.5  # ties: the gradient goes to the window's first maximum
    ours = forward_backward(cpukernels.max_pooling_2d, [x], ksize=ksize, stride=stride,
                             pad=pad, cover_all=cover_all)
    theirs = forward_backward(F.max_pooling_2d, [x], ksize=ksize, stride=stride, pad=pad,
                               cover_all=cover_all)
    for a, b in zip(ours, theirs):
        numpy.testing.assert_array_equal(a, b)


def test_kernels_run_in_training_only():
    conv = L.Convolution2D(1, 2, 3)
    pool = FL(F.max_pooling_2d, 2, 2)
    x = numpy.zeros((1, 1, 6, 6), dtype=numpy.float32)
    with chainer.using_config('train', True):
        assert isinstance(cpukernels.run_layer(conv, x).creator, cpukernels.Convolution2DCPU)
        assert isinstance(cpukernels.run_layer(pool, x).creator, cpukernels.MaxPooling2DCPU)
        with cpukernels.disabled():
            assert not isinstance(cpukernels.run_layer(conv, x).creator,
                                  cpukernels.Convolution2DCPU)
    with chainer.using_config('train', False):
        assert not isinstance(cpukernels.run_layer(conv, x).creator, cpukernels.Convolution2DCPU)


@pytest.mark.parametrize('layer', [
    L.Convolution2D(1, 2, 3, dilate=2),
    L.Convolution2D(2, 2, 3, groups=2),
    FL(F.max_pooling_2d, 2, 2, return_indices=True),
    FL(F.average_pooling_2d, 2, 2, 0, 1),   # more arguments than the function takes
    FL(F.relu),
])
def test_other_layers_run_unchanged(layer):
    x = numpy.zeros((1, 2 if getattr(layer, 'groups', 1) == 2 else 1, 8, 8), dtype=numpy.float32)
    with chainer.using_config('train', True):
        assert not cpukernels.applies(layer, x)


def test_training_matches_chainer_kernels(tiny_mnist_like):
    """Three joint steps of B-LeNet: the same weights as with Chainer's functions
    (to float32 rounding: the products sum in another order)."""
    from networks import lenet_mnist
    x, y = tiny_mnist_like
    weights = []
    for use_kernels in (True, False):
        numpy.random.seed(0)
        net = lenet_mnist.get_network()
        context = contextlib.nullcontext() if use_kernels else cpukernels.disabled()
        with context:
            utils.train_exits(net, x, y, main=True, batchsize=32, num_epoch=1, seed=0,
                              progress=False)
            utils.train_exits(net, x, y, batchsize=32, num_epoch=1, seed=0, progress=False)
        weights.append({k: p.array.copy() for k, p in net.namedparams()})
    for key in weights[0]:
        numpy.testing.assert_allclose(weights[0][key], weights[1][key], rtol=1e-4, atol=1e-5,
                                      err_msg=key)


@pytest.fixture
def tiny_mnist_like():
    rng = numpy.random.RandomState(3)
    return (rng.rand(96, 1, 28, 28).astype(numpy.float32),
            rng.randint(0, 10, 96).astype(numpy.int32))


def test_net_slices_use_the_kernels():
    net = Net([L.Convolution2D(1, 2, 3, pad=1), FL(F.max_pooling_2d, 2, 2)])
    x = numpy.ones((1, 1, 4, 4), dtype=numpy.float32)
    y = net.train(x)
    assert isinstance(y.creator, cpukernels.MaxPooling2DCPU)
    assert y.creator.inputs[0].creator.__class__ is cpukernels.Convolution2DCPU


def test_tune_allocator_applies_on_glibc():
    import platform
    applied = runtime.tune_allocator()
    assert applied == (platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc')


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(data=st.data())
def test_max_pooling_matches_chainer_on_generated_windows(data):
    """Any window, stride and padding; values drawn from a few (ties), -inf and NaN among them."""
    k = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    p = tuple(data.draw(st.integers(0, (ki - 1) // 2)) for ki in k)
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)),
             data.draw(st.integers(k[0], 11)), data.draw(st.integers(k[1], 11)))
    # -inf ties with the padding, which Chainer's argmax may pick (gradient dropped)
    values = numpy.array([-1.0, 0.0, 0.5, 1.0, 2.0, -numpy.inf, numpy.nan], numpy.float32)
    weights = [1, 1, 1, 1, 1, data.draw(st.sampled_from([0, 1, 5])),
               data.draw(st.sampled_from([0, 0.05]))]
    rng = numpy.random.RandomState(data.draw(st.integers(0, 2 ** 16)))
    x = rng.choice(values, size=shape, p=numpy.array(weights) / sum(weights))
    cover_all = data.draw(st.booleans())
    ours = forward_backward(cpukernels.max_pooling_2d, [x], ksize=k, stride=s, pad=p,
                            cover_all=cover_all)
    theirs = forward_backward(F.max_pooling_2d, [x], ksize=k, stride=s, pad=p,
                              cover_all=cover_all)
    for a, b in zip(ours, theirs):
        numpy.testing.assert_array_equal(a, b)


def test_max_pooling_regressions_against_chainer():
    """Found by review: -inf beside the padding (Chainer's padding tap wins the
    tie, the gradient is dropped); float64 kept exact; no output is an error."""
    cases = [(numpy.array([[[[-numpy.inf]]]], numpy.float32), dict(ksize=2, stride=1, pad=1)),
             (numpy.array([[[[1.0, 1.0 + 1e-12]]]]), dict(ksize=(1, 2), stride=1, pad=0))]
    def run(fn, x, **kw):
        v = chainer.Variable(x.copy())
        y = fn(v, **kw)
        y.grad = numpy.ones_like(y.array)
        y.backward()
        return y.array, v.grad
    for x, kw in cases:
        for a, b in zip(run(cpukernels.max_pooling_2d, x, **kw), run(F.max_pooling_2d, x, **kw)):
            assert a.dtype == b.dtype
            numpy.testing.assert_array_equal(a, b)
    with pytest.raises(AssertionError, match='Output sizes should be positive'):
        cpukernels.max_pooling_2d(numpy.zeros((1, 1, 3, 2), numpy.float32), 3, 1, 0,
                                  cover_all=False)



def test_a_convolution_and_the_relu_after_it_run_as_one_node_within_a_slice():
    from branchynet.links import directconv
    numpy.random.seed(0)
    net = Net([L.Convolution2D(8, 8, 3, pad=1), FL(F.relu), L.Convolution2D(8, 8, 3, pad=1),
               FL(F.relu), FL(F.max_pooling_2d, 2)])
    x = numpy.random.RandomState(0).randn(2, 8, 6, 6).astype(numpy.float32)
    with chainer.using_config('train', True):
        y = net(x, 0, 2)
        assert isinstance(y.creator, directconv.DirectConvolution2D) and y.creator.relu
        h = net(x, 0, 1)                 # the slice ends between the two: not fused
        assert not h.creator.relu and net(h, 1, 2).creator_node.label == 'ReLU'
        ours = net(x)
        net.cleargrads()  # a new link's gradients start as NaN
        ours.grad = numpy.ones_like(ours.array)
        ours.backward()
        got = [ours.array] + [p.grad.copy() for p in net.params()]
        net.cleargrads()
        with cpukernels.disabled():
            theirs = net(x)
        theirs.grad = numpy.ones_like(theirs.array)
        theirs.backward()
        want = [theirs.array] + [p.grad for p in net.params()]
    for a, b in zip(got, want):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * max(1., abs(b).max()))
    with chainer.using_config('train', False):  # test mode: Chainer's functions
        assert net(x, 0, 2).creator_node.label == 'ReLU'


def test_regressions_found_by_probing_the_kernels():
    """Each the smallest case that once went wrong in training mode."""
    from branchynet import SL
    from branchynet.validation import InvalidValue
    x = numpy.random.RandomState(0).randn(1, 3, 5, 5).astype(numpy.float32)
    with chainer.using_config('train', True):
        # SL(F.relu) after a convolution: not fused (it crashed), the same values
        net = Net([L.Convolution2D(3, 4, 3), SL(F.relu)])
        assert net(x).creator_node.label == 'ReLU'
        # a convolution given the wrong channel count: the readable error, as in test mode
        with pytest.raises(InvalidValue, match='input channels'):
            Net([L.Convolution2D(4, 4, 3)])(x)
        # a kernel larger than the padded input: refused, as Chainer refuses it
        with pytest.raises(ValueError, match='does not fit'):
            cpukernels.convolution_2d(x, numpy.ones((2, 3, 7, 7), numpy.float32))
    # the GEMM convolution's backward pass twice over one graph (it freed its columns)
    arrays = [x, numpy.random.RandomState(1).randn(2, 3, 3, 3).astype(numpy.float32)]

    def twice(fn):
        v = [chainer.Variable(a.copy()) for a in arrays]
        with chainer.using_config('train', True):
            y = F.sum(fn(*v, stride=2))
        y.backward()
        y.backward()
        return [a.grad for a in v]
    for a, b in zip(twice(cpukernels.convolution_2d), twice(F.convolution_2d)):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1., abs(b).max()))
