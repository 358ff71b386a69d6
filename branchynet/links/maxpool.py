"""Max pooling for CPU training in numba: the forward pass records where each
window's maximum was, the backward pass adds each output gradient there.

Same results as ``F.max_pooling_2d`` (output sizes, ``cover_all``, padding
that never wins, the gradient to the first maximum of a window in row-major
order, summed in Chainer's order); a window is clipped to the input instead
of padded, so no padded copy is made. Samples are split between the training kernels' threads.
"""
import chainer
import numpy

from branchynet.links import directconv

_kernels = {}


def _compiled():
    if _kernels:
        return _kernels['forward'], _kernels['backward']
    import numba
    jit = numba.njit(boundscheck=False, nogil=True, cache=True)

    @jit
    def forward(x, kh, kw, sy, sx, ph, pw, y, where, n0, n1):
        _, c, h, w = x.shape
        oh, ow = y.shape[2], y.shape[3]
        for n in range(n0, n1):
            for ch in range(c):
                for oy in range(oh):
                    y0 = max(oy * sy - ph, 0)
                    y1 = min(oy * sy - ph + kh, h)
                    for ox in range(ow):
                        x0 = max(ox * sx - pw, 0)
                        x1 = min(ox * sx - pw + kw, w)
                        best, at = -numpy.inf, y0 * w + x0
                        for iy in range(y0, y1):
                            for ix in range(x0, x1):
                                v = x[n, ch, iy, ix]
                                if v > best:
                                    best, at = v, iy * w + ix
                        y[n, ch, oy, ox] = best
                        where[n, ch, oy, ox] = at

    @jit
    def backward(gy, where, kh, kw, sy, sx, ph, pw, gx, n0, n1):
        # gathered per input pixel over the taps in row-major order: the order
        # in which Chainer's col2im adds them, so the sums are equal bit for bit
        _, c, oh, ow = gy.shape
        h, w = gx.shape[2], gx.shape[3]
        for n in range(n0, n1):
            for ch in range(c):
                for iy in range(h):
                    for ix in range(w):
                        total = numpy.float32(0)
                        for ky in range(kh):
                            ty = iy + ph - ky
                            if ty < 0 or ty % sy != 0 or ty // sy >= oh:
                                continue
                            for kx in range(kw):
                                tx = ix + pw - kx
                                if tx < 0 or tx % sx != 0 or tx // sx >= ow:
                                    continue
                                if where[n, ch, ty // sy, tx // sx] == iy * w + ix:
                                    total += gy[n, ch, ty // sy, tx // sx]
                        gx[n, ch, iy, ix] = total

    _kernels.update(forward=forward, backward=backward)
    return forward, backward


def out_size(size, k, s, p, cover_all):
    """Chainer's pooling output size."""
    if cover_all:
        return (size + 2 * p - k + s - 1) // s + 1
    return (size + 2 * p - k) // s + 1


class MaxPooling2DCPU(chainer.Function):
    """``F.max_pooling_2d`` on float32 CPU arrays."""

    def __init__(self, ksize, stride, pad, cover_all):
        self.kh, self.kw = ksize
        self.sy, self.sx = stride
        self.ph, self.pw = pad
        self.cover_all = cover_all

    def forward(self, inputs):
        x = numpy.ascontiguousarray(inputs[0])
        n, c, h, w = x.shape
        oh = out_size(h, self.kh, self.sy, self.ph, self.cover_all)
        ow = out_size(w, self.kw, self.sx, self.pw, self.cover_all)
        y = numpy.empty((n, c, oh, ow), x.dtype)
        self.where = numpy.empty((n, c, oh, ow), numpy.int32)
        self.in_shape = x.shape
        forward, _ = _compiled()
        directconv.run_split(forward, n, x, self.kh, self.kw, self.sy, self.sx, self.ph,
                             self.pw, y, self.where)
        return y,

    def backward(self, inputs, grad_outputs):
        gy = numpy.ascontiguousarray(grad_outputs[0])
        gx = numpy.empty(self.in_shape, gy.dtype)
        _, backward = _compiled()
        directconv.run_split(backward, gy.shape[0], gy, self.where, self.kh, self.kw, self.sy,
                             self.sx, self.ph, self.pw, gx)
        self.where = None
        return gx,
