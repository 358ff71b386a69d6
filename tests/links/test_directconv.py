"""The direct convolution kernels compute what Chainer's convolution computes."""
import numpy
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import branchynet  # noqa: F401
import chainer
import chainer.functions as F

from tests.helpers import forward_backward
from branchynet import jit
from branchynet.links import cpukernels, directconv, kernelsource


@pytest.fixture(autouse=True)
def direct_kernels_only(monkeypatch):
    """The direct kernels on every shape here (3x3 and 5x5 layers of 16
    channels or more would take the Winograd kernels:
    tests/links/test_winograd.py)."""
    monkeypatch.setenv('BRANCHYNET_WINOGRAD', '0')


def _compare(n, c, o, h, w, kh, kw, ph, pw, bias, seed=0, input_grad=True):
    rng = numpy.random.RandomState(seed)
    arrays = [rng.randn(n, c, h, w).astype(numpy.float32),
              rng.randn(o, c, kh, kw).astype(numpy.float32)]
    if bias:
        arrays.append(rng.randn(o).astype(numpy.float32))
    assert directconv.usable(arrays[0].shape, arrays[1].shape, (1, 1), (ph, pw), input_grad)
    skip = () if input_grad else (0,)  # the images of a first layer: no gradient
    ours = forward_backward(cpukernels.convolution_2d, arrays, pad=(ph, pw), no_grad=skip)
    theirs = forward_backward(F.convolution_2d, arrays, pad=(ph, pw), no_grad=skip)
    if skip:
        assert ours[1] is None and theirs[1] is None
        ours, theirs = ours[:1] + ours[2:], theirs[:1] + theirs[2:]
    assert [a.shape for a in ours] == [a.shape for a in theirs]
    # float32, summation order differs: relative to the largest value of each result
    for a, b in zip(ours, theirs):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * max(1., abs(b).max()))


@pytest.mark.parametrize('shape', [
    (2, 16, 16, 30, 30, 3, 3, 1, 1, False),   # B-ResNet-110's first stage
    (3, 8, 24, 7, 9, 3, 3, 1, 1, True),       # a remainder tile on each row
    (2, 16, 8, 6, 5, 5, 3, 2, 0, True),       # unequal kernel sides and padding
    (1, 8, 8, 4, 4, 1, 1, 0, 0, True),        # 1x1
    (3, 8, 16, 6, 6, 3, 3, 1, 1, True),       # 36 output pixels: copy blocks and bias lanes of 4
    (2, 8, 8, 32, 32, 3, 3, 1, 1, True),      # 1,024 pixels: blocks and lanes of 16
])
def test_direct_convolution_matches_chainer(shape):
    _compare(*shape)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), c=st.sampled_from([8, 16, 24]), o=st.sampled_from([8, 16, 32, 48]),
       h=st.integers(1, 11), w=st.integers(1, 13), kh=st.integers(1, 5), kw=st.integers(1, 5),
       bias=st.booleans(), data=st.data())
def test_generated_shapes_match_chainer(n, c, o, h, w, kh, kw, bias, data):
    _compare_with_drawn_padding(data, n, c, o, h, w, kh, kw, bias)


def _compare_with_drawn_padding(data, n, c, o, h, w, kh, kw, bias, input_grad=True):
    """``_compare`` with padding drawn up to the kernel size - 1 (where the
    padded image still holds the kernel)."""
    ph, pw = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    if h + 2 * ph < kh or w + 2 * pw < kw:
        return
    _compare(n, c, o, h, w, kh, kw, ph, pw, bias, input_grad=input_grad)


@pytest.mark.parametrize('shape', [
    (2, 3, 32, 8, 8, 5, 5, 2, 2, True),       # B-AlexNet's first layer, on a smaller image
    (2, 3, 16, 10, 10, 3, 3, 0, 0, False),    # B-ResNet-110's stem
    (3, 1, 8, 7, 9, 3, 3, 1, 1, True),        # one channel, remainder tiles
    (1, 5, 16, 6, 6, 1, 1, 0, 0, True),       # 1x1
])
def test_a_first_layer_on_few_channels_matches_chainer(shape):
    _compare(*shape, input_grad=False)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), c=st.integers(1, 7), o=st.sampled_from([8, 16, 32]),
       h=st.integers(1, 11), w=st.integers(1, 13), kh=st.integers(1, 5), kw=st.integers(1, 5),
       bias=st.booleans(), data=st.data())
def test_generated_first_layers_match_chainer(n, c, o, h, w, kh, kw, bias, data):
    _compare_with_drawn_padding(data, n, c, o, h, w, kh, kw, bias, input_grad=False)


def test_few_input_channels_whose_gradient_is_wanted_take_the_gemm_kernel():
    x = chainer.Variable(numpy.zeros((1, 3, 8, 8), numpy.float32))  # wants a gradient
    W = numpy.zeros((16, 3, 3, 3), numpy.float32)
    assert isinstance(cpukernels.convolution_2d(x, W, pad=1).creator,
                      cpukernels.Convolution2DCPU)
    y = cpukernels.convolution_2d(x.array, W, pad=1)  # a plain array: no gradient
    assert isinstance(y.creator, directconv.DirectConvolution2D)


def test_the_first_input_gradient_is_skipped_when_not_needed():
    rng = numpy.random.RandomState(0)
    x = rng.randn(2, 8, 5, 5).astype(numpy.float32)  # a plain array: no gradient wanted
    W = chainer.Variable(rng.randn(8, 8, 3, 3).astype(numpy.float32))
    y = cpukernels.convolution_2d(x, W, pad=1)
    assert isinstance(y.creator, directconv.DirectConvolution2D)
    F.sum(y).backward()
    assert W.grad is not None and W.grad.shape == W.shape


def test_narrow_or_strided_convolutions_take_the_gemm_kernel():
    x = numpy.zeros((1, 3, 8, 8), numpy.float32)
    assert not directconv.usable(x.shape, (16, 3, 3, 3), (1, 1), (1, 1))   # 3 channels in
    assert directconv.usable(x.shape, (16, 3, 3, 3), (1, 1), (1, 1), input_grad=False)
    assert not directconv.usable(x.shape, (5, 3, 3, 3), (1, 1), (1, 1), input_grad=False)
    assert not directconv.usable((1, 16, 8, 8), (16, 16, 3, 3), (2, 2), (1, 1))
    assert not directconv.usable((1, 16, 8, 8), (16, 16, 3, 3), (1, 1), (3, 3))
    y = cpukernels.convolution_2d(x, numpy.zeros((16, 3, 3, 3), numpy.float32), stride=2, pad=1)
    assert isinstance(y.creator, cpukernels.Convolution2DCPU)


def test_batches_split_between_threads_give_the_same_result(monkeypatch):
    rng = numpy.random.RandomState(3)
    arrays = [rng.randn(5, 8, 6, 6).astype(numpy.float32),
              rng.randn(16, 8, 3, 3).astype(numpy.float32)]
    results = []
    for threads in ('1', '3'):
        monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', threads)
        results.append(forward_backward(cpukernels.convolution_2d, arrays, pad=1))
    for a, b in zip(*results):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1., abs(b).max()))


@pytest.mark.parametrize('bits', [256, 512])
@pytest.mark.parametrize('layout', ['channels', 'pixels'])
@pytest.mark.parametrize('shape', [
    (2, 16, 16, 32, 32, 3, 3, 1, 1, True),    # rows of two 512-bit vectors
    (2, 8, 24, 7, 9, 3, 3, 1, 1, True),       # remainder tiles
    (1, 32, 32, 16, 16, 3, 3, 1, 1, False),   # 32 output channels: 512-bit gradient sums
])
def test_every_vector_width_and_tile_form_matches_chainer(monkeypatch, bits, layout, shape):
    monkeypatch.setenv('BRANCHYNET_VECTOR_BITS', str(bits))
    monkeypatch.setattr(directconv, 'forward_layout', lambda width, bits: layout)
    monkeypatch.setattr(directconv, '_kernels', {})
    _compare(*shape)


def test_512_bit_kernels_use_512_bit_registers(monkeypatch, tmp_path):
    monkeypatch.delenv('BRANCHYNET_VECTOR_BITS', raising=False)
    if jit.vector_bits() < 512:
        pytest.skip('this processor has no 512-bit vectors (AVX-512F)')
    # an empty cache folder and a shape no other test uses: compiled here, so
    # numba has its assembly (machine code loaded from a cache has none)
    monkeypatch.setenv('BRANCHYNET_NUMBA_CACHE', str(tmp_path))
    source = directconv.forward_source(16, 32, 17, 19, 3, 3)
    assert 'zmm' in ''.join(kernelsource.compile_source(source, 512).inspect_asm().values())
    assert 'zmm' not in ''.join(kernelsource.compile_source(source, 256).inspect_asm().values())


@pytest.mark.parametrize('ph,pw', [(0, 0), (1, 1), (2, 0), (0, 2), (2, 1)])
def test_padding_in_the_kernels_equals_a_padded_input(ph, pw):
    """Each sample padded inside the kernels: the same sums, in the same order,
    as on an input padded beforehand (bit for bit), on strided views too."""
    rng = numpy.random.RandomState(0)
    x = rng.randn(3, 16, 7, 12).astype(numpy.float32)
    W = rng.randn(8, 16, 3, 3).astype(numpy.float32)
    b = rng.randn(8).astype(numpy.float32)
    for view in (x, x[:, :, :, ::2], x.transpose(0, 1, 3, 2)[:, :, :7, :7]):
        padded = numpy.pad(view, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        y = directconv.forward(view, W, b, ph, pw)
        numpy.testing.assert_array_equal(y, directconv.forward(padded, W, b))
        gy = rng.randn(*y.shape).astype(numpy.float32)
        numpy.testing.assert_array_equal(directconv.backward_weight(view, gy, 3, 3, ph, pw),
                                         directconv.backward_weight(padded, gy, 3, 3))


@pytest.mark.parametrize('shape', [
    (2, 8, 8, 2, 32, 3, 3, 1, 1, True),      # vectors along the row (512-bit hosts)
    (3, 8, 16, 5, 7, 3, 3, 1, 1, False),     # vectors across channels
    (2, 3, 4, 9, 9, 5, 5, 2, 2, True),       # 3 input channels: the GEMM path
])
def test_convolution_then_relu_in_one_node_matches_chainer(shape):
    n, c, o, h, w, kh, kw, ph, pw, bias = shape
    rng = numpy.random.RandomState(1)
    arrays = [rng.randn(n, c, h, w).astype(numpy.float32),
              rng.randn(o, c, kh, kw).astype(numpy.float32)]
    if bias:
        arrays.append(rng.randn(o).astype(numpy.float32))
    arrays[0][0, 0, 0, :2] = [numpy.nan, -0.]  # NaN and -0.0 through ReLU as Chainer's

    def ours(*v, pad):
        y = cpukernels.convolution_2d(*v, pad=pad, relu=True)
        direct = directconv.usable(v[0].shape, v[1].shape, (1, 1), pad)
        assert isinstance(y.creator, directconv.DirectConvolution2D) == direct
        return y
    got = forward_backward(ours, arrays, pad=(ph, pw))
    want = forward_backward(lambda *v, pad: F.relu(F.convolution_2d(*v, pad=pad)), arrays,
                            pad=(ph, pw))
    for a, b in zip(got, want):
        assert numpy.array_equal(numpy.isnan(a), numpy.isnan(b))
        a, b = numpy.nan_to_num(a), numpy.nan_to_num(b)
        numpy.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * max(1., abs(b).max()))


def _input_used_twice(x, W, b, up, other, pad, chainer_adds):
    """Gradients of a loss where ``x`` feeds a convolution and, deeper in the
    graph, an addition (as a residual block's input feeds its first convolution
    and its shortcut): the addition's gradient reaches ``x`` first. With
    ``chainer_adds``, Chainer sums the two; else the backward-data kernel does."""
    xv, Wv, bv = chainer.Variable(x), chainer.Variable(W), chainer.Variable(b)
    node = directconv.DirectConvolution2D(pad)
    if chainer_adds:
        node.backward_accumulate = chainer.FunctionNode.backward_accumulate.__get__(node)
    y = node.apply((xv, Wv, bv))[0]
    block = xv + F.broadcast_to(F.sum(F.tanh(y)) * 1e-3, x.shape)
    (F.sum(F.tanh(y) * up) + F.sum(block * other)).backward()
    return xv.grad, Wv.grad, bv.grad


@pytest.mark.parametrize('bits', [256, 512])
@pytest.mark.parametrize('layout', ['channels', 'pixels'])
@pytest.mark.parametrize('shape', [
    (2, 16, 16, 32, 32, 3, 3, 1, 1),    # rows of two 512-bit vectors
    (3, 8, 24, 7, 9, 3, 3, 1, 1),       # remainder tiles
    (2, 8, 8, 6, 5, 5, 3, 2, 0),        # unequal kernel sides and padding
])
def test_an_input_gradient_added_in_the_kernel_equals_chainers_sum(monkeypatch, bits, layout,
                                                                    shape):
    """The input's earlier gradient added as the backward-data kernel stores:
    Chainer's ``earlier + new`` to the bit, the kernel taking that path."""
    monkeypatch.setenv('BRANCHYNET_VECTOR_BITS', str(bits))
    monkeypatch.setattr(directconv, 'forward_layout', lambda width, bits: layout)
    monkeypatch.setattr(directconv, '_kernels', {})
    n, c, o, h, w, kh, kw, ph, pw = shape
    rng = numpy.random.RandomState(4)
    x = rng.randn(n, c, h, w).astype(numpy.float32)
    W = rng.randn(o, c, kh, kw).astype(numpy.float32)
    b = rng.randn(o).astype(numpy.float32)
    up = rng.randn(n, o, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1).astype(numpy.float32)
    other = rng.randn(*x.shape).astype(numpy.float32)
    added = []
    task = directconv._forward_task

    def spy(x, W, b, ph, pw, relu, earlier):
        added.append(earlier is not None)
        return task(x, W, b, ph, pw, relu, earlier)
    monkeypatch.setattr(directconv, '_forward_task', spy)
    ours = _input_used_twice(x, W, b, up, other, (ph, pw), chainer_adds=False)
    assert added == [False, True]  # the forward pass, then backward-data adding
    theirs = _input_used_twice(x, W, b, up, other, (ph, pw), chainer_adds=True)
    for a, t in zip(ours, theirs):
        numpy.testing.assert_array_equal(a, t)


def test_an_earlier_gradient_of_another_shape_is_refused():
    x = numpy.zeros((1, 8, 4, 4), numpy.float32)
    with pytest.raises(ValueError, match=r'earlier is float32 \(1, 8, 3, 3\); expected float32'):
        directconv.forward(x, numpy.zeros((8, 8, 3, 3), numpy.float32), None, 1, 1,
                           earlier=numpy.zeros((1, 8, 3, 3), numpy.float32))


@pytest.mark.parametrize('threads', ['1', '2', '3'])
def test_both_gradients_from_one_split_equal_each_alone(monkeypatch, threads):
    """``backward`` (each range runs the backward-data and backward-weight
    kernels) gives what ``backward_data`` and ``backward_weight`` give, to the bit."""
    monkeypatch.setenv('BRANCHYNET_TRAIN_THREADS', threads)
    rng = numpy.random.RandomState(6)
    x = rng.randn(7, 8, 9, 9).astype(numpy.float32)
    W = rng.randn(16, 8, 3, 3).astype(numpy.float32)
    gy = rng.randn(7, 16, 9, 9).astype(numpy.float32)
    earlier = rng.randn(*x.shape).astype(numpy.float32)
    for e in (None, earlier):
        gx, gw, gb = directconv.backward(x, gy, W, 1, 1, e)
        numpy.testing.assert_array_equal(gx, directconv.backward_data(gy, W, 1, 1, e))
        want_w, want_b = directconv.backward_weight(x, gy, 3, 3, 1, 1, with_bias=True)
        numpy.testing.assert_array_equal(gw, want_w)
        numpy.testing.assert_array_equal(gb, want_b)


def test_shared_weights_gather_their_gradients_as_chainer_does():
    """W and b used by two convolutions arrive at the second's backward with
    the first's gradients: summed as Chainer sums them, to the bit."""
    rng = numpy.random.RandomState(8)
    x = rng.randn(2, 8, 6, 6).astype(numpy.float32)
    W = rng.randn(8, 8, 3, 3).astype(numpy.float32)
    b = rng.randn(8).astype(numpy.float32)
    grads = []
    for chainer_adds in (False, True):
        xv, Wv, bv = chainer.Variable(x), chainer.Variable(W), chainer.Variable(b)

        def conv(h):
            node = directconv.DirectConvolution2D((1, 1))
            if chainer_adds:
                node.backward_accumulate = chainer.FunctionNode.backward_accumulate.__get__(node)
            return node.apply((h, Wv, bv))[0]
        F.sum(F.tanh(conv(F.tanh(conv(xv))))).backward()
        grads.append((xv.grad, Wv.grad, bv.grad))
    for a, t in zip(*grads):
        numpy.testing.assert_array_equal(a, t)
