"""The Winograd kernels (F(2x2, 3x3), F(4x4, 3x3), F(2x2, 5x5), F(4x4, 5x5)) compute what
Chainer's convolution computes."""
import fractions

import numpy
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import branchynet  # noqa: F401
import chainer.functions as F

from tests.helpers import forward_backward
from branchynet.links import cpukernels, directconv, winograd
from branchynet.links.winograd import Form

F23, F43, F25, F45 = Form(2, 3), Form(4, 3), Form(2, 5), Form(4, 5)


@pytest.fixture
def used(monkeypatch):
    """``(kind, c_in, o_all, ..., form)`` of each convolution kernel asked
    for, in order (the filter transforms left out)."""
    calls = []
    original = winograd.kernel

    def spy(kind, form, *sizes):
        if kind not in ('filters', 'back'):
            calls.append((kind,) + sizes + (form,))
        return original(kind, form, *sizes)
    monkeypatch.setattr(winograd, 'kernel', spy)
    return calls


def _arrays(n, c, o, h, w, bias, seed=0, k=3):
    rng = numpy.random.RandomState(seed)
    arrays = [rng.randn(n, c, h, w).astype(numpy.float32),
              rng.randn(o, c, k, k).astype(numpy.float32)]
    return arrays + ([rng.randn(o).astype(numpy.float32)] if bias else [])


def _assert_close(ours, theirs, scale=2e-5):
    assert [a.shape for a in ours] == [a.shape for a in theirs]
    # float32 through the transforms: relative to the largest value of each result
    # (measured: at most 8.3e-6 of it for F(2x2, 5x5), 9.7e-6 for F(4x4, 5x5),
    # 6.8e-6 for F(4x4, 3x3))
    for a, b in zip(ours, theirs):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=scale * max(1., abs(b).max()))


@pytest.mark.parametrize('form', [F23, F43, F25, F45])
def test_the_matrices_compute_the_correlation_exactly(form):
    m, r = form
    at, g, bt = (numpy.array(a, dtype=object) for a in winograd.matrices(m, r))
    rng = numpy.random.RandomState(m * 10 + r)
    d = rng.randint(-9, 10, (m + r - 1,) * 2).astype(object)
    f = rng.randint(-9, 10, (r, r)).astype(object)
    y = at.dot((g.dot(f).dot(g.T)) * (bt.dot(d).dot(bt.T))).dot(at.T)
    want = [[(d[i:i + r, j:j + r] * f).sum() for j in range(m)] for i in range(m)]
    assert y.tolist() == want
    assert all(v.denominator == 1 for row in winograd.matrices(m, r)[2] for v in row)
    assert isinstance(winograd.matrices(m, r)[1][0][0], fractions.Fraction)


def test_forms_beyond_the_points_are_refused():
    with pytest.raises(ValueError, match='F\\(8, 3\\) needs 9 points'):
        winograd.matrices(8, 3)


def test_the_form_chosen_by_filter_size_channels_and_pixels(monkeypatch):
    assert winograd.choose(16, 16, 3, 3, 30, 30) == F43
    assert winograd.choose(32, 32, 3, 3, 8, 8) == F43
    assert winograd.choose(32, 64, 5, 5, 16, 16) == F45
    assert winograd.choose(8, 16, 3, 3, 30, 30) is None      # few input channels
    assert winograd.choose(16, 8, 3, 3, 30, 30) is None      # few output channels
    assert winograd.choose(16, 16, 3, 3, 7, 7) is None       # 49 pixels: slower there
    assert winograd.choose(3, 32, 5, 5, 32, 32) is None      # B-AlexNet's first layer
    assert winograd.choose(5, 10, 5, 5, 10, 10) is None      # B-LeNet's second layer
    assert winograd.choose(16, 16, 7, 7, 30, 30) is None     # no form for 7x7
    assert winograd.choose(16, 16, 3, 5, 30, 30) is None     # not square
    monkeypatch.setenv('BRANCHYNET_WINOGRAD', '0')
    assert winograd.choose(16, 16, 3, 3, 30, 30) is None


@pytest.mark.parametrize('shape', [
    (2, 16, 16, 30, 30, 1, 1, True, 3),    # B-ResNet-110's first stage
    (2, 32, 32, 15, 15, 1, 1, True, 3),    # its second: tiles cut at the edge
    (5, 64, 64, 8, 8, 1, 1, True, 3),      # its third: 4 samples to a group, 5 = 4 + 1
    (3, 16, 24, 12, 11, 0, 0, False, 3),   # no padding: 10 x 9 outputs
    (1, 24, 16, 8, 9, 2, 2, True, 3),      # padding 2: outputs larger than the input
    (2, 16, 32, 9, 13, 1, 2, False, 3),    # unequal padding
    (2, 32, 64, 16, 16, 2, 2, True, 5),    # B-AlexNet's second layer
    (3, 16, 24, 11, 13, 1, 3, False, 5),   # 5x5, unequal padding, odd outputs
    (2, 24, 16, 12, 12, 0, 0, True, 5),    # 5x5, no padding: 8 x 8 outputs
])
def test_forward_and_gradients_match_chainer(used, shape):
    n, c, o, h, w, ph, pw, bias, k = shape
    arrays = _arrays(n, c, o, h, w, bias, k=k)
    ours = forward_backward(cpukernels.convolution_2d, arrays, pad=(ph, pw))
    theirs = forward_backward(F.convolution_2d, arrays, pad=(ph, pw))
    _assert_close(ours, theirs)
    form = F43 if k == 3 else F45
    # the forward pass, then the input gradient (padding k - 1 - p) and the weight gradient
    assert [u[:3] + u[-1:] for u in used] == [('forward', c, o, form), ('forward', o, c, form),
                                              ('weight-bias', c, o, form)]


@pytest.mark.parametrize('k', [3, 5])
def test_relu_applied_as_stored_matches_chainer(used, k):
    arrays = _arrays(2, 16, 16, 12, 12, True, seed=1, k=k)
    pad = k // 2

    def conv_relu(x, W, b):
        return directconv.DirectConvolution2D((pad, pad), relu=True).apply((x, W, b))[0]
    ours = forward_backward(conv_relu, arrays)
    theirs = forward_backward(lambda x, W, b: F.relu(F.convolution_2d(x, W, b, pad=pad)),
                              arrays)
    _assert_close(ours, theirs)
    assert used[0][0] == 'forward-relu'
    assert used[0][-1] == (F43 if k == 3 else F45)


@pytest.mark.parametrize('k', [3, 5])
def test_an_earlier_gradient_is_added_as_stored(used, k):
    rng = numpy.random.RandomState(2)
    gy = rng.randn(3, 16, 10, 10).astype(numpy.float32)
    W = rng.randn(16, 24, k, k).astype(numpy.float32)
    earlier = rng.randn(3, 24, 10, 10).astype(numpy.float32)
    pad = k // 2
    alone = directconv.backward_data(gy, W, pad, pad)
    numpy.testing.assert_array_equal(directconv.backward_data(gy, W, pad, pad, earlier=earlier),
                                     earlier + alone)
    assert [u[0] for u in used] == ['forward', 'forward-accumulate']


@pytest.mark.parametrize('threads', ['1', '2', '3'])
def test_the_split_between_threads_changes_nothing(monkeypatch, threads):
    arrays = _arrays(7, 16, 16, 9, 9, True, seed=3)  # 9 tiles a sample: groups of 2
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '1')
    one = directconv.forward(*arrays, 1, 1)
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', threads)
    numpy.testing.assert_array_equal(directconv.forward(*arrays, 1, 1), one)


def test_a_sample_computes_the_same_in_a_group_as_alone(monkeypatch):
    """Samples with few tiles are transformed and multiplied in groups
    (``winograd.group``): each tile's sums are its own, so a sample's
    outputs are the same bits whichever group it is in."""
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', '1')
    x, W, b = _arrays(6, 32, 16, 8, 8, True, seed=7)
    assert winograd.group(4) == 4  # F(4x4, 3x3) on 8 x 8: 4 tiles a sample
    together = directconv.forward(x, W, b, 1, 1)
    for i in range(len(x)):
        numpy.testing.assert_array_equal(directconv.forward(x[i:i + 1], W, b, 1, 1),
                                         together[i:i + 1])


def test_the_weight_gradient_alone_matches_the_direct_kernel(used, monkeypatch):
    rng = numpy.random.RandomState(5)
    x = rng.randn(3, 16, 11, 10).astype(numpy.float32)
    gy = rng.randn(3, 32, 11, 10).astype(numpy.float32)
    ours = directconv.backward_weight(x, gy, 3, 3, 1, 1, with_bias=True)
    assert [k[0] for k in used] == ['weight-bias']
    monkeypatch.setenv('BRANCHYNET_WINOGRAD', '0')
    _assert_close(ours, directconv.backward_weight(x, gy, 3, 3, 1, 1, with_bias=True))


def _g(form):
    return numpy.array(winograd.matrices(*form)[1], numpy.float64)


@pytest.mark.parametrize('form', [F23, F43, F25, F45])
def test_the_filter_transform_is_g_times_the_filter_times_g_transposed(form):
    W = numpy.random.RandomState(4).randn(24, 16, form.r, form.r).astype(numpy.float32)
    g = _g(form)
    want = numpy.einsum('ik,ockl,jl->cijo', g, W.astype(numpy.float64), g)
    numpy.testing.assert_allclose(winograd.transform_filters(W, form), want.reshape(-1),
                                  rtol=0, atol=1e-6 * abs(want).max())


@pytest.mark.parametrize('form', [F23, F43, F25, F45])
def test_the_weight_gradient_is_g_transposed_times_the_transformed_gradient_times_g(form):
    n = form.m + form.r - 1
    gu = numpy.random.RandomState(6).randn(16, n * n, 24).astype(numpy.float32)  # (C, n*n, O)
    g = _g(form)
    want = numpy.einsum('ik,cijo,jl->ockl', g, gu.reshape(16, n, n, 24).astype(numpy.float64), g)
    numpy.testing.assert_allclose(winograd.weights_from_transform(gu.reshape(-1), form, 24, 16),
                                  want, rtol=0, atol=1e-6 * abs(want).max())


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])
@given(form=st.sampled_from([F23, F43, F25, F45]), n=st.integers(1, 5),
       c=st.sampled_from([16, 24, 32]), o=st.sampled_from([16, 32, 48]),
       h=st.integers(1, 17), w=st.integers(1, 17), ph=st.integers(0, 4), pw=st.integers(0, 4),
       bias=st.booleans())
def test_generated_shapes_match_the_direct_kernel(monkeypatch, form, n, c, o, h, w, ph, pw,
                                                 bias):
    """Every form on every size, whatever ``choose`` says of it: forward and
    both gradients against the direct kernel (which matches Chainer's)."""
    r = form.r
    ph, pw = min(ph, r - 1), min(pw, r - 1)
    if h + 2 * ph < r or w + 2 * pw < r:
        return
    arrays = _arrays(n, c, o, h, w, bias, seed=h * 31 + w, k=r)
    results = []
    for chosen in (form, None):  # each monkeypatch undone before the next example
        with monkeypatch.context() as patch:
            patch.setattr(winograd, 'choose', lambda *sizes: chosen)
            results.append(forward_backward(cpukernels.convolution_2d, arrays, pad=(ph, pw)))
    _assert_close(*results)
