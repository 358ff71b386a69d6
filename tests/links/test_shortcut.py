"""The residual shortcut node gives exactly what Chainer's pooling and concat give."""
import contextlib

import numpy
from hypothesis import given, settings, strategies as st

import branchynet  # noqa: F401
import chainer

from branchynet.links import cpukernels, shortcut


def _run(use_kernels, x, gy, stride, channels, train=True):
    xv = chainer.Variable(x.copy())
    with chainer.using_config('train', train), \
            (contextlib.nullcontext() if use_kernels else cpukernels.disabled()):
        y = cpukernels.residual_shortcut(xv, stride, channels)
    if y is xv:
        return y, [x, None]
    y.grad = gy
    y.backward()
    return y, [y.array, xv.grad]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 6), extra=st.integers(0, 5),
       h=st.integers(1, 9), w=st.integers(1, 9), stride=st.integers(1, 3),
       seed=st.integers(0, 99))
def test_shortcut_equals_chainers_pooling_and_concat_exactly(n, c, extra, h, w, stride, seed):
    rng = numpy.random.RandomState(seed)
    x = rng.randn(n, c, h, w).astype(numpy.float32)
    oh, ow = -(-h // stride), -(-w // stride)
    gy = rng.randn(n, c + extra, oh, ow).astype(numpy.float32)
    ours, got = _run(True, x, gy, stride, c + extra)
    theirs, want = _run(False, x, gy, stride, c + extra)
    if stride != 1 or extra:
        assert isinstance(ours.creator, shortcut.ShortcutCPU)
        assert not isinstance(theirs.creator, shortcut.ShortcutCPU)
    for a, b in zip(got, want):
        assert a is None and b is None or (a.shape == b.shape and numpy.array_equal(a, b))


def test_shortcut_in_test_mode_and_on_other_arrays_is_chainers():
    x = numpy.ones((2, 3, 4, 4), numpy.float32)
    y, _ = _run(True, x, numpy.ones((2, 5, 2, 2), numpy.float32), 2, 5, train=False)
    assert not isinstance(y.creator, shortcut.ShortcutCPU)
    assert not shortcut.usable(x.astype(numpy.int32), 2, 5)
    assert not shortcut.usable(x, 2, 2)  # fewer output channels than input channels
