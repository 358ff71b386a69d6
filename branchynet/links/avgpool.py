"""Average pooling for CPU training as one strided sum per window tap.

``F.average_pooling_2d`` on the CPU builds an im2col array of every window
(``kh * kw`` times the output), averages it, and in the backward pass fills
another such array and folds it back with col2im. Here the forward pass adds
the ``kh * kw`` strided views of the (zero-padded) input into the output and
divides by the window's size; the backward pass adds the output gradient into
each view of a zeroed input gradient, tap by tap in row-major order, then
divides by the window's size (col2im's order and Chainer's division: the
same gradient to the last bit). As in Chainer, padding counts as zeros in every window's mean. On
B-ResNet-110's last pooling (window 6, stride 1, 64 channels of 8x8, batch 64)
Chainer's forward and backward took 15 and 20 ms per step.
"""
import chainer
import numpy

from branchynet.links.maxpool import out_size


def tap_slices(ky, kx, sy, sx, oh, ow):
    """The index of an (N, C, H, W) array's values that window tap ``(ky, kx)``
    meets in each of the ``oh x ow`` windows of strides ``sy``, ``sx``."""
    return (slice(None), slice(None), slice(ky, ky + sy * oh, sy), slice(kx, kx + sx * ow, sx))


def _views(a, kh, kw, sy, sx, oh, ow):
    """Each tap's view of ``a`` (row-major order): what it meets in every window."""
    for ky in range(kh):
        for kx in range(kw):
            yield a[tap_slices(ky, kx, sy, sx, oh, ow)]


class AveragePooling2DCPU(chainer.FunctionNode):
    """``F.average_pooling_2d`` on float CPU arrays (no double backpropagation)."""

    def __init__(self, ksize, stride, pad):
        self.kh, self.kw = ksize
        self.sy, self.sx = stride
        self.ph, self.pw = pad

    def _padded(self, x):
        if not self.ph and not self.pw:
            return x
        return numpy.pad(x, ((0, 0), (0, 0), (self.ph, self.ph), (self.pw, self.pw)))

    def forward(self, inputs):
        x, = inputs
        n, c, h, w = x.shape
        oh = out_size(h, self.kh, self.sy, self.ph, False)
        ow = out_size(w, self.kw, self.sx, self.pw, False)
        if oh <= 0 or ow <= 0:
            raise ValueError('average pooling: a {}x{} window does not fit {}x{} padded by '
                             '{}, {}'.format(self.kh, self.kw, h, w, self.ph, self.pw))
        self.in_shape, self.out_hw = x.shape, (oh, ow)
        y = numpy.zeros((n, c, oh, ow), x.dtype)
        for view in _views(self._padded(x), self.kh, self.kw, self.sy, self.sx, oh, ow):
            y += view
        y /= x.dtype.type(self.kh * self.kw)
        return y,

    def backward(self, indexes, grad_outputs):
        gy = grad_outputs[0].array
        n, c, h, w = self.in_shape
        gx = numpy.zeros((n, c, h + 2 * self.ph, w + 2 * self.pw), gy.dtype)
        for view in _views(gx, self.kh, self.kw, self.sy, self.sx, *self.out_hw):
            view += gy
        gx = gx[:, :, self.ph:self.ph + h, self.pw:self.pw + w]
        gx /= self.kh * self.kw
        return chainer.Variable(gx),


def average_pooling_2d(x, ksize, stride, pad):
    """``AveragePooling2DCPU`` applied to ``x``; each size a pair."""
    return AveragePooling2DCPU(ksize, stride, pad).apply((x,))[0]
