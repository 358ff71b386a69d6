"""Max pooling for CPU training in numba: the forward pass records which tap of
each window held its maximum, the backward pass adds each output gradient there.

Same results as ``F.max_pooling_2d`` (output sizes, ``cover_all``, padding
that never wins, the gradient to the first maximum of a window in row-major
order, summed in Chainer's order); a window is clipped to the input instead
of padded, so no padded copy is made. Samples are split between the training kernels' threads.
"""
import chainer
import numpy

from branchynet.links.directconv import run_split

_kernels = {}


def _compiled():
    if _kernels:
        return _kernels['forward'], _kernels['backward']
    import numba
    jit = numba.njit(boundscheck=False, nogil=True, cache=True)

    @jit
    def forward(x, kh, kw, sy, sx, ph, pw, y, tap, n0, n1):
        # tap by tap over a whole output row, so that the inner loop (over the
        # row's outputs, the window clipped to the input) has no other branch
        _, c, h, w = x.shape
        oh, ow = y.shape[2], y.shape[3]
        for n in range(n0, n1):
            for ch in range(c):
                for oy in range(oh):
                    best, at = y[n, ch, oy], tap[n, ch, oy]
                    best[:] = -numpy.inf
                    at[:] = -1
                    for ky in range(kh):
                        iy = oy * sy - ph + ky
                        if iy < 0 or iy >= h:
                            continue
                        row = x[n, ch, iy]
                        for kx in range(kw):
                            t = ky * kw + kx
                            lo = max(0, (pw - kx + sx - 1) // sx)
                            hi = min(ow, (w - 1 + pw - kx) // sx + 1)
                            for ox in range(lo, hi):
                                v, b, a = row[ox * sx - pw + kx], best[ox], at[ox]
                                # the first maximum; a NaN wins, as in Chainer
                                # (no short-circuit: selects that vectorise)
                                take = (a < 0) | (v > b) | ((v != v) & (b == b))
                                best[ox] = v if take else b
                                at[ox] = t if take else a

    @jit
    def backward(gy, tap, kh, kw, sy, sx, ph, pw, gx, n0, n1):
        # Chainer's col2im adds tap by tap in row-major order; the outputs taken
        # in reverse row-major order reach every input pixel in that same order
        # (a later tap of one pixel belongs to an earlier output), so one pass
        # makes every pixel's sum in Chainer's order: equal bit for bit
        _, c, oh, ow = gy.shape
        for n in range(n0, n1):
            for ch in range(c):
                g = gx[n, ch]
                g[:] = 0
                for oy in range(oh - 1, -1, -1):
                    for ox in range(ow - 1, -1, -1):
                        t = tap[n, ch, oy, ox]
                        if t >= 0:
                            g[oy * sy - ph + t // kw, ox * sx - pw + t % kw] += gy[n, ch, oy, ox]

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
        self.retain_inputs(())  # the backward pass needs only the taps
        x = numpy.ascontiguousarray(inputs[0])
        n, c, h, w = x.shape
        oh = out_size(h, self.kh, self.sy, self.ph, self.cover_all)
        ow = out_size(w, self.kw, self.sx, self.pw, self.cover_all)
        y = numpy.empty((n, c, oh, ow), x.dtype)
        self.tap = numpy.empty((n, c, oh, ow), numpy.int32)
        self.in_shape = x.shape
        forward, _ = _compiled()
        run_split(forward, n, x, self.kh, self.kw, self.sy, self.sx, self.ph,
                             self.pw, y, self.tap)
        return y,

    def backward(self, inputs, grad_outputs):
        gy = numpy.ascontiguousarray(grad_outputs[0])
        gx = numpy.empty(self.in_shape, gy.dtype)
        _, backward = _compiled()
        run_split(backward, gy.shape[0], gy, self.tap, self.kh, self.kw, self.sy,
                             self.sx, self.ph, self.pw, gx)
        return gx,
