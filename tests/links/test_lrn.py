"""Local response normalisation for training computes what Chainer's computes."""
import numpy
from hypothesis import given, settings, strategies as st

import branchynet  # noqa: F401
import chainer
import chainer.functions as F

from branchynet import FL
from branchynet.links import cpukernels, lrn
from tests.helpers import forward_backward, run_on_kernel


def _ours(x, **kwargs):
    return run_on_kernel(FL(F.local_response_normalization, **kwargs), x,
                         lrn.LocalResponseNormalizationCPU)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 6), w=st.integers(1, 6),
       size=st.sampled_from([1, 2, 3, 5, 6]), k=st.sampled_from([1., 2.]),
       alpha=st.sampled_from([5e-5, 1e-4, 0.5]), beta=st.sampled_from([.75, .5, 1.3]),
       scale=st.sampled_from([1., 30.]), seed=st.integers(0, 99))
def test_lrn_matches_chainer(n, c, h, w, size, k, alpha, beta, scale, seed):
    x = (numpy.random.RandomState(seed).randn(n, c, h, w) * scale).astype(numpy.float32)
    kwargs = dict(n=size, k=k, alpha=alpha, beta=beta)
    ours = forward_backward(lambda v: _ours(v, **kwargs), [x])
    theirs = forward_backward(lambda v: F.local_response_normalization(v, **kwargs), [x])
    if beta != .75:  # numpy's power, every other operation as Chainer's: the same bits
        for a, b in zip(ours, theirs):
            numpy.testing.assert_array_equal(a, b)
        return
    # u ** -0.75 as r * sqrt(r), r = 1 / sqrt(u): within a few float32 roundings
    for a, b in zip(ours, theirs):
        numpy.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6 * max(1., abs(b).max()))


def test_networks_lrn_layers_run_here():
    layer = FL(F.local_response_normalization, n=3, k=2, alpha=5e-5, beta=0.75)
    x = numpy.ones((2, 4, 3, 3), numpy.float32)
    with chainer.using_config('train', True):
        assert isinstance(cpukernels.run_layer(layer, x).creator,
                          lrn.LocalResponseNormalizationCPU)
    with chainer.using_config('train', False):
        assert not isinstance(cpukernels.run_layer(layer, x).creator,
                              lrn.LocalResponseNormalizationCPU)
