"""Average pooling for training computes what Chainer's F.average_pooling_2d computes."""
import numpy
from hypothesis import given, settings, strategies as st

import branchynet  # noqa: F401
import chainer
import chainer.functions as F

from branchynet import FL
from branchynet.links import avgpool
from tests.helpers import forward_backward, run_on_kernel


def _ours(x, ksize, stride, pad):
    return run_on_kernel(FL(F.average_pooling_2d, ksize, stride, pad), x,
                         avgpool.AveragePooling2DCPU)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 10), w=st.integers(1, 10),
       kh=st.integers(1, 6), kw=st.integers(1, 6), sy=st.integers(1, 4), sx=st.integers(1, 4),
       data=st.data())
def test_average_pooling_matches_chainer(n, c, h, w, kh, kw, sy, sx, data):
    ph, pw = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    if h + 2 * ph < kh or w + 2 * pw < kw:
        return
    seed = data.draw(st.integers(0, 99))
    x = numpy.random.RandomState(seed).randn(n, c, h, w).astype(numpy.float32)
    ours = forward_backward(_ours, [x], ksize=(kh, kw), stride=(sy, sx), pad=(ph, pw))
    theirs = forward_backward(F.average_pooling_2d, [x], ksize=(kh, kw), stride=(sy, sx),
                              pad=(ph, pw))
    assert [a.shape for a in ours] == [a.shape for a in theirs]
    # the means sum in another order (float32 rounding); the gradients in Chainer's
    numpy.testing.assert_allclose(ours[0], theirs[0], rtol=0,
                                  atol=1e-6 * max(1., abs(theirs[0]).max()))
    numpy.testing.assert_array_equal(ours[1], theirs[1])


def test_resnets_last_pooling_runs_here_with_the_default_stride():
    x = chainer.Variable(numpy.ones((2, 3, 8, 8), numpy.float32))
    y = _ours(x, 6, None, 0)  # stride None: the window's size, as Chainer's
    assert y.shape == (2, 3, 1, 1)
    y = _ours(x, 6, 1, 0)
    assert y.shape == (2, 3, 3, 3) and numpy.allclose(y.array, 1)
