"""The residual shortcut that changes a block's shape, for CPU training.

B-ResNet-110's first block of a stage (as the original) subsamples its input
with ``F.average_pooling_2d(x, 1, stride)`` (a window of one pixel: every
``stride``-th pixel, unchanged) and appends zero channels with ``F.concat``.
Chainer's average pooling goes through im2col, a mean over the window and
col2im, and the concatenation copies once more; here the forward pass is one
strided copy into a zeroed output and the backward pass one strided copy of
the gradient's first channels into a zeroed input gradient. The values are
exactly Chainer's (a mean over one value is that value).
"""
import chainer
import numpy


class ShortcutCPU(chainer.FunctionNode):
    """``x`` (N, C, H, W) subsampled by ``stride`` and zero-padded to ``channels``
    channels: (N, channels, ceil(H / stride), ceil(W / stride))."""

    def __init__(self, stride, channels):
        self.stride, self.channels = stride, channels

    def forward(self, inputs):
        x, = inputs
        s = self.stride
        n, c, h, w = x.shape
        self.in_shape = x.shape
        y = numpy.zeros((n, self.channels, -(-h // s), -(-w // s)), x.dtype)
        y[:, :c] = x[:, :, ::s, ::s]
        return y,

    def backward(self, indexes, grad_outputs):
        gy = grad_outputs[0].array
        s = self.stride
        gx = numpy.zeros(self.in_shape, gy.dtype)
        gx[:, :, ::s, ::s] = gy[:, :self.in_shape[1]]
        return chainer.Variable(gx),


def usable(x, stride, channels):
    """Whether ``ShortcutCPU`` takes ``x``: a 4-d float numpy array, a stride of
    at least 1 and at least as many output channels as input channels."""
    array = x.array if isinstance(x, chainer.Variable) else x
    return (isinstance(array, numpy.ndarray) and array.ndim == 4
            and array.dtype.kind == 'f' and int(stride) >= 1 and channels >= array.shape[1])


def shortcut(x, stride, channels):
    """``ShortcutCPU(stride, channels)`` applied to ``x``."""
    return ShortcutCPU(int(stride), int(channels)).apply((x,))[0]
