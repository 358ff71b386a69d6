"""The Winograd F(2x2, 3x3) kernel computes what Chainer's convolution computes."""
import numpy
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import branchynet  # noqa: F401
import chainer.functions as F

from tests.helpers import forward_backward
from branchynet.links import cpukernels, directconv, winograd


@pytest.fixture
def used(monkeypatch):
    """The sizes each Winograd kernel was asked for, in order."""
    calls = []
    original = winograd.kernel

    def spy(kind, *sizes):
        calls.append((kind,) + sizes)
        return original(kind, *sizes)
    monkeypatch.setattr(winograd, 'kernel', spy)
    return calls


def _arrays(n, c, o, h, w, bias, seed=0):
    rng = numpy.random.RandomState(seed)
    arrays = [rng.randn(n, c, h, w).astype(numpy.float32),
              rng.randn(o, c, 3, 3).astype(numpy.float32)]
    return arrays + ([rng.randn(o).astype(numpy.float32)] if bias else [])


def _assert_close(ours, theirs, scale=2e-5):
    assert [a.shape for a in ours] == [a.shape for a in theirs]
    # float32 through the transforms: relative to the largest value of each result
    for a, b in zip(ours, theirs):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=scale * max(1., abs(b).max()))


def test_it_is_chosen_for_3x3_layers_of_16_channels_or_more_on_64_pixels(monkeypatch):
    assert winograd.preferred(16, 16, 3, 3, 30, 30)
    assert winograd.preferred(32, 32, 3, 3, 8, 8)
    assert not winograd.preferred(8, 16, 3, 3, 30, 30)      # few input channels
    assert not winograd.preferred(16, 8, 3, 3, 30, 30)      # few output channels
    assert not winograd.preferred(16, 16, 3, 3, 7, 7)       # 49 pixels: slower there
    assert not winograd.preferred(16, 16, 5, 5, 30, 30)     # not 3x3
    monkeypatch.setenv('BRANCHYNET_WINOGRAD', '0')
    assert not winograd.preferred(16, 16, 3, 3, 30, 30)


@pytest.mark.parametrize('shape', [
    (2, 16, 16, 30, 30, 1, 1, True),    # B-ResNet-110's first stage
    (2, 32, 32, 15, 15, 1, 1, True),    # its second: odd sides, tiles cut at the edge
    (2, 64, 64, 8, 8, 1, 1, True),      # its third
    (3, 16, 24, 12, 11, 0, 0, False),   # no padding: 10 x 9 outputs
    (1, 24, 16, 8, 9, 2, 2, True),      # padding 2: outputs larger than the input
    (2, 16, 32, 9, 13, 1, 2, False),    # unequal padding
])
def test_forward_and_gradients_match_chainer(used, shape):
    n, c, o, h, w, ph, pw, bias = shape
    arrays = _arrays(n, c, o, h, w, bias)
    ours = forward_backward(cpukernels.convolution_2d, arrays, pad=(ph, pw))
    theirs = forward_backward(F.convolution_2d, arrays, pad=(ph, pw))
    _assert_close(ours, theirs)
    # the forward pass, then the input gradient (padding 2 - p) and the weight gradient
    assert [k[:3] for k in used] == [('forward', c, o), ('forward', o, c), ('weight-bias', c, o)]


def test_relu_applied_as_stored_matches_chainer(used):
    arrays = _arrays(2, 16, 16, 12, 12, True, seed=1)

    def conv_relu(x, W, b):
        return directconv.DirectConvolution2D((1, 1), relu=True).apply((x, W, b))[0]
    ours = forward_backward(conv_relu, arrays)
    theirs = forward_backward(lambda x, W, b: F.relu(F.convolution_2d(x, W, b, pad=1)), arrays)
    _assert_close(ours, theirs)
    assert used[0][0] == 'forward-relu'


def test_an_earlier_gradient_is_added_as_stored(used):
    rng = numpy.random.RandomState(2)
    gy = rng.randn(3, 16, 10, 10).astype(numpy.float32)
    W = rng.randn(16, 24, 3, 3).astype(numpy.float32)
    earlier = rng.randn(3, 24, 10, 10).astype(numpy.float32)
    alone = directconv.backward_data(gy, W, 1, 1)
    numpy.testing.assert_array_equal(directconv.backward_data(gy, W, 1, 1, earlier=earlier),
                                     earlier + alone)
    assert [k[0] for k in used] == ['forward', 'forward-accumulate']


@pytest.mark.parametrize('threads', ['1', '2', '3'])
def test_the_split_between_threads_changes_nothing(monkeypatch, threads):
    arrays = _arrays(7, 16, 16, 9, 9, True, seed=3)
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '1')
    one = directconv.forward(*arrays, 1, 1)
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', threads)
    numpy.testing.assert_array_equal(directconv.forward(*arrays, 1, 1), one)


def test_the_weight_gradient_alone_matches_the_direct_kernel(used, monkeypatch):
    rng = numpy.random.RandomState(5)
    x = rng.randn(3, 16, 11, 10).astype(numpy.float32)
    gy = rng.randn(3, 32, 11, 10).astype(numpy.float32)
    ours = directconv.backward_weight(x, gy, 3, 3, 1, 1, with_bias=True)
    assert [k[0] for k in used] == ['weight-bias']
    monkeypatch.setenv('BRANCHYNET_WINOGRAD', '0')
    _assert_close(ours, directconv.backward_weight(x, gy, 3, 3, 1, 1, with_bias=True))


def test_the_filter_transform_is_g_times_the_filter_times_g_transposed():
    W = numpy.random.RandomState(4).randn(24, 16, 3, 3).astype(numpy.float32)
    want = numpy.einsum('ik,ockl,jl->cijo', winograd.G, W.astype(numpy.float64), winograd.G)
    numpy.testing.assert_allclose(winograd.transform_filters(W), want.reshape(-1), rtol=0,
                                  atol=1e-6 * abs(want).max())


def test_the_weight_gradient_is_g_transposed_times_the_transformed_gradient_times_g():
    gu = numpy.random.RandomState(6).randn(16, 16, 24).astype(numpy.float32)  # (C, 16, O)
    m = gu.reshape(16, 4, 4, 24).astype(numpy.float64)
    want = numpy.einsum('ik,cijo,jl->ockl', winograd.G, m, winograd.G)
    numpy.testing.assert_allclose(winograd.weights_from_transform(gu.reshape(-1), 24, 16), want,
                                  rtol=0, atol=1e-6 * abs(want).max())


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 3), c=st.sampled_from([16, 24, 32]), o=st.sampled_from([16, 32, 48]),
       h=st.integers(1, 17), w=st.integers(1, 17), ph=st.integers(0, 2), pw=st.integers(0, 2),
       bias=st.booleans())
def test_generated_shapes_match_the_direct_kernel(monkeypatch, n, c, o, h, w, ph, pw, bias):
    """Every size, whatever ``preferred`` says of it: forward and input
    gradient against the direct kernel (which matches Chainer's)."""
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        return
    arrays = _arrays(n, c, o, h, w, bias, seed=h * 31 + w)
    results = []
    for chosen in (True, False):  # each monkeypatch undone before the next example
        with monkeypatch.context() as patch:
            patch.setattr(winograd, 'preferred', lambda *sizes: chosen)
            results.append(forward_backward(cpukernels.convolution_2d, arrays, pad=(ph, pw)))
    _assert_close(*results)
