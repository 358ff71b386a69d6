"""CPU training kernels: which layer runs on which, and the GEMM convolution.

``run_layer`` (the layer list's links) and ``batch_norm`` (a batch
normalisation, optionally fused with a shortcut and ReLU, as in ``ResBlock``)
route a layer in training mode to:

* ``directconv``: stride-1 convolutions with channels in multiples of 8
  (input channels any number where the input needs no gradient: a first layer);
* ``Convolution2DCPU`` (here) for the other plain convolutions. Chainer's CPU
  convolution builds an ``(N, C, kh, kw, oh, ow)`` column array and hands it
  to ``numpy.tensordot``, which copies it again into a matrix before the
  product and the result back into ``(N, C, H, W)``; this one gathers the
  padded input straight into GEMM layout (one copy) and skips the input
  gradient where nothing needs it;
* ``batchnorm``: batch normalisation with one gamma per channel;
* ``maxpool``, ``avgpool`` and ``lrn``: max and average pooling and local
  response normalisation called through ``FL``;
* ``shortcut``: the residual shortcut that subsamples and zero-pads
  (``residual_shortcut``, as in ``ResBlock``);

and to the layer itself otherwise, and in test mode (``run_frozen`` excepted,
for the layers whose test mode computes what training does). They compute the
same functions as Chainer's (output sizes, ``cover_all``, tie-breaking at the
first maximum of a window in row-major order); results differ only in
floating-point summation order. No double backpropagation.
"""
import contextlib
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.links.avgpool import average_pooling_2d as _average_pooling_2d, tap_slices
from branchynet.links.batchnorm import (batch_normalization as _fused_batch_normalization,
                                       usable as _bn_usable)
from branchynet.links.directconv import DirectConvolution2D, usable as _direct_usable
from branchynet.links.lrn import local_response_normalization as _local_response_normalization
from branchynet.links.maxpool import MaxPooling2DCPU, out_size
from branchynet.links.shortcut import shortcut as _shortcut, usable as _shortcut_usable


class Convolution2DCPU(chainer.Function):
    """``F.convolution_2d`` (no dilation, one group) as ``kh * kw`` slice copies
    and one GEMM, with channels first: the column matrix is ``(C*kh*kw, N*oh*ow)``,
    so every copy moves whole rows and the products need no transposed copies.
    With ``relu``, followed by ``F.relu``: applied in the copy of the product
    back to ``(N, C, H, W)``, its gradient in the copy the other way."""

    def __init__(self, stride, pad, relu=False):
        self.sy, self.sx = stride
        self.ph, self.pw = pad
        self.relu = relu

    def _slices(self, i, j, oh, ow):
        return tap_slices(i, j, self.sy, self.sx, oh, ow)

    def _columns(self, x, kh, kw, oh, ow):
        """The column matrix ``(C*kh*kw, N*oh*ow)`` of ``x``."""
        n, c, h, w = x.shape
        padded = numpy.zeros((c, n, h + 2 * self.ph, w + 2 * self.pw), dtype=x.dtype)
        padded[:, :, self.ph:self.ph + h, self.pw:self.pw + w] = x.transpose(1, 0, 2, 3)
        col = numpy.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                col[:, i, j] = padded[self._slices(i, j, oh, ow)]
        return col.reshape(c * kh * kw, n * oh * ow)

    def forward(self, inputs):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        n, c, h, w = x.shape
        out_c, _, kh, kw = W.shape
        oh = out_size(h, kh, self.sy, self.ph, False)
        ow = out_size(w, kw, self.sx, self.pw, False)
        if oh <= 0 or ow <= 0:  # Chainer's check, which it asserts
            raise ValueError('convolution: a {}x{} kernel does not fit {}x{} padded by {}, '
                             '{}'.format(kh, kw, h, w, self.ph, self.pw))
        self.col = self._columns(x, kh, kw, oh, ow)
        y = W.reshape(out_c, -1) @ self.col
        if b is not None:
            y += b[:, None]
        self.shape = (n, c, h, w, oh, ow)
        y = y.reshape(out_c, n, oh, ow).transpose(1, 0, 2, 3)
        if not self.relu:
            return numpy.ascontiguousarray(y),
        self.retain_outputs((0,))
        out = numpy.empty(y.shape, y.dtype)
        return numpy.maximum(y, 0, out=out, dtype=y.dtype),  # F.relu's expression

    def _input_gradient(self, W, gy_t):
        """The input's gradient (skipped for an input that needs none, e.g. the images)."""
        n, c, h, w, oh, ow = self.shape
        out_c, _, kh, kw = W.shape
        gcol = (W.reshape(out_c, -1).T @ gy_t).reshape(c, kh, kw, n, oh, ow)
        gx = numpy.zeros((c, n, h + 2 * self.ph, w + 2 * self.pw), dtype=W.dtype)
        for i in range(kh):
            for j in range(kw):
                gx[self._slices(i, j, oh, ow)] += gcol[:, i, j]
        return numpy.ascontiguousarray(
            gx[:, :, self.ph:self.ph + h, self.pw:self.pw + w].transpose(1, 0, 2, 3))

    def backward(self, inputs, grad_outputs):
        x, W = inputs[:2]
        gy, = grad_outputs
        n, c, h, w, oh, ow = self.shape
        out_c, _, kh, kw = W.shape
        if self.relu:  # ReLU's gradient (Chainer's gy * (y > 0)) in the transposed copy
            gy_t = numpy.empty((out_c, n, oh, ow), gy.dtype)
            numpy.multiply(gy.transpose(1, 0, 2, 3),
                           (self.output_data[0] > 0).transpose(1, 0, 2, 3), out=gy_t)
            gy_t = gy_t.reshape(out_c, -1)
        else:
            gy_t = numpy.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(out_c, -1)
        if self.col is None:  # a second backward pass through the same graph
            self.col = self._columns(x, kh, kw, oh, ow)
        gW = (gy_t @ self.col.T).reshape(W.shape)
        self.col = None  # freed as soon as it is used: it is kh * kw times the input
        gx = self._input_gradient(W, gy_t) if self.inputs[0].requires_grad else None
        if len(inputs) == 3:
            return gx, gW, gy_t.sum(axis=1)
        return gx, gW


def _pair(v):
    return (v, v) if numpy.isscalar(v) else tuple(v)


def convolution_2d(x, W, b=None, stride=1, pad=0, relu=False):
    """``F.convolution_2d`` on CPU arrays (then ``F.relu`` with ``relu``):
    stride 1 with channels in multiples of 8 (input channels any number where
    ``x`` wants no gradient) on the direct kernels (``directconv.usable``),
    else ``Convolution2DCPU``."""
    args = (x, W) if b is None else (x, W, b)
    stride, pad = _pair(stride), _pair(pad)
    input_grad = isinstance(x, chainer.Variable) and x.requires_grad
    if _direct_usable(x.shape, W.shape, stride, pad, input_grad):
        return DirectConvolution2D(pad, relu).apply(args)[0]
    return Convolution2DCPU(stride, pad, relu)(*args)


def max_pooling_2d(x, ksize, stride=None, pad=0, cover_all=True):
    """``F.max_pooling_2d`` on CPU arrays through ``MaxPooling2DCPU``."""
    stride = ksize if stride is None else stride
    return MaxPooling2DCPU(_pair(ksize), _pair(stride), _pair(pad), cover_all)(x)


#: the functions of ``FL`` layers ``run_layer`` takes: their arguments, in
#: order, and the defaults of those that have one
_FUNCTIONS = {
    F.max_pooling_2d: (('ksize', 'stride', 'pad', 'cover_all'),
                       {'stride': None, 'pad': 0, 'cover_all': True}),
    F.average_pooling_2d: (('ksize', 'stride', 'pad'), {'stride': None, 'pad': 0}),
    F.local_response_normalization: (('n', 'k', 'alpha', 'beta'),
                                     {'n': 5, 'k': 2, 'alpha': 1e-4, 'beta': .75}),
}


def _function_arguments(layer):
    """``(function, {argument: value})`` of an ``FL`` layer of one of
    ``_FUNCTIONS`` called with arguments it takes, else None (also for an
    ``SL``, which names its training layer ``fn`` but holds no arguments:
    its test mode differs)."""
    fn = getattr(layer, 'fn', None)
    if not callable(fn) or fn not in _FUNCTIONS:
        return None
    args, kwargs = getattr(layer, 'arguments', None), getattr(layer, 'keywords', None)
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        return None
    names, defaults = _FUNCTIONS[fn]
    given = dict(zip(names, args))
    if len(args) > len(names) or set(given) & set(kwargs) or not set(kwargs) <= set(names):
        return None
    given.update(kwargs)
    if not set(names) <= set(given) | set(defaults):
        return None
    return fn, dict(defaults, **given)


#: ``BRANCHYNET_CPU_KERNELS=0`` starts a process with Chainer's own functions.
_enabled = os.environ.get('BRANCHYNET_CPU_KERNELS', '1') not in ('0', 'off', 'false')


def enabled():
    """Whether the kernels are on (``BRANCHYNET_CPU_KERNELS``, ``disabled()``)."""
    return _enabled


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
    if type(layer) is L.BatchNormalization:
        return _bn_usable(layer, x)
    array = x.array if isinstance(x, chainer.Variable) else x
    if not isinstance(array, numpy.ndarray) or array.ndim != 4 or array.dtype != numpy.float32:
        return False
    if type(layer) is L.Convolution2D:  # a wrong channel count: Chainer's error
        return (layer.W.array is not None and layer.dilate == (1, 1) and layer.groups == 1
                and layer.W.dtype == numpy.float32 and array.shape[1] == layer.W.shape[1])
    return _function_arguments(layer) is not None


def run_layer(layer, x):
    """``layer(x)``, through the kernels above in training mode where they apply.

    Test mode (inference, timing) runs Chainer's own functions here
    (``run_frozen`` computes test mode on the kernels for the layers that
    compute the same in both modes)."""
    if not chainer.config.train or not applies(layer, x):
        return layer(x)
    if type(layer) is L.Convolution2D:
        return convolution_2d(x, layer.W, layer.b, layer.stride, layer.pad)
    if type(layer) is L.BatchNormalization:
        return _fused_batch_normalization(layer, x)
    fn, a = _function_arguments(layer)
    if fn is F.local_response_normalization:
        return _local_response_normalization(x, a['n'], a['k'], a['alpha'], a['beta'])
    stride = a['ksize'] if a['stride'] is None else a['stride']
    if fn is F.average_pooling_2d:
        return _average_pooling_2d(x, _pair(a['ksize']), _pair(stride), _pair(a['pad']))
    return max_pooling_2d(x, a['ksize'], stride, a['pad'], a['cover_all'])


def run_frozen(layer, x):
    """``layer(x)`` as test mode computes it, on the kernels for the layers
    whose test mode computes what training mode does (convolution, max and
    average pooling, LRN through ``FL``): a frozen trunk's activations, as
    ``placement`` trains heads on them. Batch normalisation (population
    statistics in test mode), dropout, ``SL`` and every other layer run as
    ``layer(x)`` in the caller's mode. ``x`` is taken as an array (no
    gradient wanted: a first convolution of any channel count runs on the
    direct kernel)."""
    if type(layer) is L.BatchNormalization or not applies(layer, x):
        return layer(x)
    with chainer.using_config('train', True):  # no layer taken here reads it
        return run_layer(layer, chainer.as_array(x))


def fuses_with_relu(layer, following, x):
    """Whether ``layer`` and the ``following`` one run as one node
    (``run_convolution_relu``): a convolution ``run_layer`` takes, then
    ``FL(F.relu)``, in training mode."""
    return (chainer.config.train and type(layer) is L.Convolution2D
            and getattr(following, 'fn', None) is F.relu
            # FL's arguments, none given (an SL(F.relu) has no such attribute: not fused)
            and getattr(following, 'arguments', None) == ()
            and getattr(following, 'keywords', None) == {} and applies(layer, x))


def run_convolution_relu(layer, x):
    """``F.relu(layer(x))`` for a convolution where ``fuses_with_relu`` holds:
    one node, the ReLU applied as the convolution's outputs are stored."""
    return convolution_2d(x, layer.W, layer.b, layer.stride, layer.pad, relu=True)


def _same_array_kind(shortcut, x):
    """Whether ``shortcut`` is absent or a numpy array of ``x``'s shape and
    dtype (the fused kernel does not broadcast; Chainer's addition does)."""
    if shortcut is None:
        return True
    a = shortcut.array if isinstance(shortcut, chainer.Variable) else shortcut
    b = x.array if isinstance(x, chainer.Variable) else x
    return isinstance(a, numpy.ndarray) and a.shape == b.shape and a.dtype == b.dtype


def batch_norm(link, x, relu=False, shortcut=None):
    """``link(x)``, plus ``shortcut`` if given, then ReLU if ``relu``: in one
    fused kernel in training mode where it applies, else Chainer's functions."""
    if chainer.config.train and applies(link, x) and _same_array_kind(shortcut, x):
        return _fused_batch_normalization(link, x, relu, shortcut)
    h = link(x)
    if shortcut is not None:
        h = h + shortcut
    return F.relu(h) if relu else h


def residual_shortcut(x, stride, channels):
    """A residual block's shortcut: ``x`` average-pooled with a window of 1 and
    ``stride`` (every ``stride``-th pixel) and zero-padded to ``channels``
    channels; ``x`` itself where neither changes anything. One strided copy
    each way in training mode where it applies, else Chainer's functions."""
    n, c = x.shape[:2]
    if stride == 1 and channels == c:
        return x
    if chainer.config.train and _enabled and _shortcut_usable(x, stride, channels):
        return _shortcut(x, stride, channels)
    if stride != 1:
        x = F.average_pooling_2d(x, 1, stride)
    if channels != c:
        xp = chainer.backend.get_array_module(x)
        pad = xp.zeros((n, channels - c) + x.shape[2:], dtype=x.dtype)
        x = F.concat((x, pad), axis=1)
    return x
