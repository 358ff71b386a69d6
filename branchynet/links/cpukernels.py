"""Faster CPU training kernels for 2-D convolution and max pooling.

Chainer's CPU convolution builds an ``(N, C, kh, kw, oh, ow)`` column array
and hands it to ``numpy.tensordot``, which copies it again into a matrix
before the product, and copies the result back into ``(N, C, H, W)``; its
max pooling builds a column array of the window too. For small networks
(B-LeNet's kernels have 1-20 channels) these copies, not the products, are
most of a training step. The kernels here make one copy per input
(a strided view of the padded input gathered straight into GEMM layout)
and pool by comparing ``kh * kw`` shifted slices.

They compute the same functions as ``F.convolution_2d`` and
``F.max_pooling_2d`` (same output sizes, ``cover_all``, tie-breaking at
the first maximum of the window in row-major order); results differ from
Chainer's only in floating-point summation order. ``run_layer`` routes a
layer to them when it applies (numpy arrays, plain convolutions, max
pooling called through ``FL``) and to the layer itself otherwise.
Double backpropagation is not supported by these kernels.
"""
import contextlib

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.links import directconv


def _out_size(size, k, s, p, cover_all):
    if cover_all:
        return (size + 2 * p - k + s - 1) // s + 1
    return (size + 2 * p - k) // s + 1


def _pad(x, ph, pw, extra_h, extra_w, value):
    """``x`` (N, C, H, W) padded by ``ph``/``pw`` each side plus ``extra`` at the end."""
    if not (ph or pw or extra_h or extra_w):
        return x
    n, c, h, w = x.shape
    out = numpy.full((n, c, h + 2 * ph + extra_h, w + 2 * pw + extra_w), value, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


class Convolution2DCPU(chainer.Function):
    """``F.convolution_2d`` (no dilation, one group) as ``kh * kw`` slice copies
    and one GEMM, with channels first: the column matrix is ``(C*kh*kw, N*oh*ow)``,
    so every copy moves whole rows and the products need no transposed copies."""

    def __init__(self, stride, pad):
        self.sy, self.sx = stride
        self.ph, self.pw = pad

    def _slices(self, i, j, oh, ow):
        return (slice(None), slice(None), slice(i, i + self.sy * oh, self.sy),
                slice(j, j + self.sx * ow, self.sx))

    def forward(self, inputs):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        n, c, h, w = x.shape
        out_c, _, kh, kw = W.shape
        oh = _out_size(h, kh, self.sy, self.ph, False)
        ow = _out_size(w, kw, self.sx, self.pw, False)
        padded = numpy.zeros((c, n, h + 2 * self.ph, w + 2 * self.pw), dtype=x.dtype)
        padded[:, :, self.ph:self.ph + h, self.pw:self.pw + w] = x.transpose(1, 0, 2, 3)
        col = numpy.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                col[:, i, j] = padded[self._slices(i, j, oh, ow)]
        self.col = col.reshape(c * kh * kw, n * oh * ow)
        y = W.reshape(out_c, -1) @ self.col
        if b is not None:
            y += b[:, None]
        self.shape = (n, c, h, w, oh, ow)
        return numpy.ascontiguousarray(y.reshape(out_c, n, oh, ow).transpose(1, 0, 2, 3)),

    def backward(self, inputs, grad_outputs):
        x, W = inputs[:2]
        gy, = grad_outputs
        n, c, h, w, oh, ow = self.shape
        out_c, _, kh, kw = W.shape
        gy_t = numpy.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(out_c, -1)
        gW = (gy_t @ self.col.T).reshape(W.shape)
        self.col = None
        gcol = (W.reshape(out_c, -1).T @ gy_t).reshape(c, kh, kw, n, oh, ow)
        gx = numpy.zeros((c, n, h + 2 * self.ph, w + 2 * self.pw), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                gx[self._slices(i, j, oh, ow)] += gcol[:, i, j]
        gx = numpy.ascontiguousarray(
            gx[:, :, self.ph:self.ph + h, self.pw:self.pw + w].transpose(1, 0, 2, 3))
        if len(inputs) == 3:
            return gx, gW, gy_t.sum(axis=1)
        return gx, gW


class MaxPooling2DCPU(chainer.Function):
    """``F.max_pooling_2d`` by comparing the ``kh * kw`` shifted slices."""

    def __init__(self, ksize, stride, pad, cover_all):
        self.kh, self.kw = ksize
        self.sy, self.sx = stride
        self.ph, self.pw = pad
        self.cover_all = cover_all

    def _windows(self, padded, oh, ow):
        """The ``kh * kw`` shifted slices of ``padded``, in row-major window order."""
        return [padded[:, :, i:i + self.sy * oh:self.sy, j:j + self.sx * ow:self.sx]
                for i in range(self.kh) for j in range(self.kw)]

    def forward(self, inputs):
        x, = inputs
        n, c, h, w = x.shape
        oh = _out_size(h, self.kh, self.sy, self.ph, self.cover_all)
        ow = _out_size(w, self.kw, self.sx, self.pw, self.cover_all)
        # Pad so that every window is inside the array (-inf never wins).
        extra_h = max(0, (oh - 1) * self.sy + self.kh - h - 2 * self.ph)
        extra_w = max(0, (ow - 1) * self.sx + self.kw - w - 2 * self.pw)
        self.padded = _pad(x, self.ph, self.pw, extra_h, extra_w, -numpy.inf)
        windows = self._windows(self.padded, oh, ow)
        y = windows[0].copy()
        for window in windows[1:]:
            numpy.maximum(y, window, out=y)
        self.y = y
        return y,

    def backward(self, inputs, grad_outputs):
        gy, = grad_outputs
        n, c, h, w = inputs[0].shape
        oh, ow = gy.shape[2:]
        gx = numpy.zeros(self.padded.shape, dtype=gy.dtype)
        taken = numpy.zeros(gy.shape, dtype=bool)
        for window, g_window in zip(self._windows(self.padded, oh, ow),
                                    self._windows(gx, oh, ow)):
            # The gradient goes to the first maximum of each window only.
            first = window == self.y
            first &= ~taken
            taken |= first
            g_window += numpy.where(first, gy, 0)
        self.padded = self.y = None
        return numpy.ascontiguousarray(gx[:, :, self.ph:self.ph + h, self.pw:self.pw + w]),


def _pair(v):
    return (v, v) if numpy.isscalar(v) else tuple(v)


def convolution_2d(x, W, b=None, stride=1, pad=0):
    """``F.convolution_2d`` on CPU arrays: stride 1 with channels in multiples
    of 8 on the direct kernels (``directconv``), else ``Convolution2DCPU``."""
    args = (x, W) if b is None else (x, W, b)
    stride, pad = _pair(stride), _pair(pad)
    if directconv.usable(x.shape, W.shape, stride, pad):
        return directconv.DirectConvolution2D(pad).apply(args)[0]
    return Convolution2DCPU(stride, pad)(*args)


def max_pooling_2d(x, ksize, stride=None, pad=0, cover_all=True):
    """``F.max_pooling_2d`` on CPU arrays through ``MaxPooling2DCPU``."""
    stride = ksize if stride is None else stride
    return MaxPooling2DCPU(_pair(ksize), _pair(stride), _pair(pad), cover_all)(x)


def _pool_arguments(layer):
    """``(ksize, stride, pad, cover_all)`` of an ``FL(F.max_pooling_2d, ...)``, else None."""
    if getattr(layer, 'fn', None) is not F.max_pooling_2d:
        return None
    names = ('ksize', 'stride', 'pad', 'cover_all')
    given = dict(zip(names, layer.args))
    if len(layer.args) > len(names) or set(given) & set(layer.kwargs) or \
            not set(layer.kwargs) <= set(names) or 'return_indices' in layer.kwargs:
        return None
    given.update(layer.kwargs)
    if 'ksize' not in given:
        return None
    return (given['ksize'], given.get('stride'), given.get('pad', 0),
            given.get('cover_all', True))


_enabled = True


@contextlib.contextmanager
def disabled():
    """Run Chainer's own functions everywhere inside the block (for comparisons)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def applies(layer, x):
    """Whether ``run_layer`` has a faster kernel for ``layer`` on input ``x``."""
    if not _enabled:
        return False
    array = x.array if isinstance(x, chainer.Variable) else x
    if not isinstance(array, numpy.ndarray) or array.ndim != 4 or array.dtype != numpy.float32:
        return False
    if type(layer) is L.Convolution2D:
        return (layer.W.array is not None and layer.dilate == (1, 1) and layer.groups == 1
                and layer.W.dtype == numpy.float32)
    return _pool_arguments(layer) is not None


def run_layer(layer, x):
    """``layer(x)``, through the kernels above in training mode where they apply.

    Test mode (inference, timing) always runs Chainer's own functions."""
    if not chainer.config.train or not applies(layer, x):
        return layer(x)
    if type(layer) is L.Convolution2D:
        return convolution_2d(x, layer.W, layer.b, layer.stride, layer.pad)
    ksize, stride, pad, cover_all = _pool_arguments(layer)
    return max_pooling_2d(x, ksize, stride, pad, cover_all)
