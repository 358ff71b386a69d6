"""Max pooling for CPU training in numba: the forward pass records which tap of
each window held its maximum, the backward pass adds each output gradient there.

Same results as ``F.max_pooling_2d`` (output sizes, ``cover_all``, padding
as ``-inf``, the gradient to the first maximum of a window in row-major
order, summed in Chainer's order; only the sign of a zero output may differ
where a window holds both ``0.0`` and ``-0.0``); a window is clipped to the
input instead of padded, so no padded copy is made. Samples are split between
the training kernels' threads.
"""
import chainer
import numpy

from branchynet.jit import vector_bits
from branchynet.links.kernelsource import compile_source
from branchynet.links.kernelthreads import run_split

_kernels = {}


def forward_source(kh, kw, sy, sx, ph, pw):
    """Source of ``kernel(x, y, tap, start, stop)``: max pooling of the samples
    ``start..stop`` with the window sizes, strides and paddings as literals.

    Separable: each input row's best of every horizontal window (its maximum
    and the first ``kx`` holding it), then per output row the first ``ky`` whose
    row maximum wins, so ``tap = ky * kw + kx`` is the window's first maximum in
    row-major order, as Chainer's argmax. As in Chainer, padding is ``-inf``
    and takes part: it wins only a window whose inputs are all ``-inf`` and
    that starts with it (``tap = -1``: the gradient is dropped); a NaN wins
    over numbers, the first NaN over later ones."""
    return '''def kernel(x, y, tap, start, stop):
    kh, kw, sy, sx, ph, pw = {}, {}, {}, {}, {}, {}
    _, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    low = -numpy.inf
    rbest = numpy.empty((h, ow), x.dtype)
    rtap = numpy.empty((h, ow), numpy.int32)
    for n in range(start, stop):
        for ch in range(c):
            xc = x[n, ch]
            for iy in range(h):
                row, best, at = xc[iy], rbest[iy], rtap[iy]
                for ox in range(ow):
                    ix = ox * sx - pw
                    inside = ix >= 0 and ix < w
                    b = row[ix] if inside else low
                    a = 0 if inside else -1
                    for kx in range(1, kw):
                        ix = ox * sx - pw + kx
                        inside = ix >= 0 and ix < w
                        v = row[ix] if inside else low
                        t = kx if inside else -1
                        take = (v > b) | ((v != v) & (b == b))
                        b = v if take else b
                        a = t if take else a
                    best[ox], at[ox] = b, a
            for oy in range(oh):
                yr, tr = y[n, ch, oy], tap[n, ch, oy]
                for ky in range(kh):
                    iy = oy * sy - ph + ky
                    if iy < 0 or iy >= h:  # a row of padding
                        if ky == 0:
                            yr[:] = low
                            tr[:] = -1
                        continue
                    best, at = rbest[iy], rtap[iy]
                    if ky == 0:
                        for ox in range(ow):
                            yr[ox] = best[ox]
                            tr[ox] = at[ox]
                        continue
                    for ox in range(ow):
                        v, b, a, kx = best[ox], yr[ox], tr[ox], at[ox]
                        take = (v > b) | ((v != v) & (b == b))
                        yr[ox] = v if take else b
                        tr[ox] = (ky * kw + kx if kx >= 0 else -1) if take else a
'''.format(kh, kw, sy, sx, ph, pw)


def forward_kernel(kh, kw, sy, sx, ph, pw):
    """The compiled forward kernel of one window geometry (each its own code:
    with the sizes known, LLVM unrolls and vectorises the taps; 2-3x faster)."""
    key = ('forward', kh, kw, sy, sx, ph, pw)
    fn = _kernels.get(key)
    if fn is None:
        import numba
        a4 = numba.float32[:, :, :, ::1]
        signature = (a4, a4, numba.int32[:, :, :, ::1], numba.intp, numba.intp)
        fn = _kernels[key] = compile_source(forward_source(*key[1:]), vector_bits(),
                                            signature, fastmath=None)
    return fn


def _backward_kernel():
    if 'backward' in _kernels:
        return _kernels['backward']
    import numba
    jit = numba.njit(boundscheck=False, nogil=True, cache=True)

    @jit
    def backward(gy, tap, rows, cols, sy, sx, gx, n0, n1):
        # Chainer's col2im adds tap by tap in row-major order; the outputs taken
        # in reverse row-major order reach every input pixel in that same order
        # (a later tap of one pixel belongs to an earlier output), so one pass
        # makes every pixel's sum in Chainer's order: equal bit for bit.
        # A tap's row and column offsets come from the tables ``rows`` and
        # ``cols``: computed as t // kw and t % kw, two integer divisions per
        # output, the pass took 28.0 ms on B-AlexNet's three poolings (batch
        # 512, two threads, AMD EPYC with AVX-512), with the tables 19.5 ms
        _, c, oh, ow = gy.shape
        for n in range(n0, n1):
            for ch in range(c):
                g = gx[n, ch]
                g[:] = 0
                for oy in range(oh - 1, -1, -1):
                    for ox in range(ow - 1, -1, -1):
                        t = tap[n, ch, oy, ox]
                        if t >= 0:
                            g[oy * sy + rows[t], ox * sx + cols[t]] += gy[n, ch, oy, ox]

    _kernels['backward'] = backward
    return backward


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
        assert oh > 0 and ow > 0, 'Output sizes should be positive.'  # Chainer's check
        y = numpy.empty((n, c, oh, ow), x.dtype)
        self.tap = numpy.empty((n, c, oh, ow), numpy.int32)
        self.in_shape = x.shape
        forward = forward_kernel(self.kh, self.kw, self.sy, self.sx, self.ph, self.pw)
        run_split(forward, n, x, y, self.tap)
        return y,

    def backward(self, inputs, grad_outputs):
        gy = numpy.ascontiguousarray(grad_outputs[0])
        gx = numpy.empty(self.in_shape, gy.dtype)
        backward = _backward_kernel()
        taps = numpy.arange(self.kh * self.kw, dtype=numpy.intp)
        rows, cols = taps // self.kw - self.ph, taps % self.kw - self.pw
        run_split(backward, gy.shape[0], gy, self.tap, rows, cols, self.sy, self.sx, gx)
        return gx,
