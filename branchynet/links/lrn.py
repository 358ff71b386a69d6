"""Local response normalisation for CPU training in numba.

``F.local_response_normalization`` computes, per value, the sum ``S`` of the
squares in a window of ``n`` channels around it, ``u = k + alpha * S`` and
``y = x * u ** -beta``; its CPU code makes about fifteen numpy passes over
the activations forward and backward (the squares, each shifted addition of
the window, the scale, the power, ...). Here each sample is done in one
kernel call with its squares and window sums in buffers of the kernel's own
(in cache): forward one read of ``x`` and writes of ``y``, ``u`` and the
scale; backward one read each of ``x``, ``y``, the output gradient, ``u``
and the scale and one write of the input gradient. B-AlexNet's two LRN
layers took 95 ms of an 862 ms main step with Chainer's functions (batch
512, 2 threads, Intel Xeon).

Window sums add the channels in Chainer's order (the value's own square,
then one channel below and one above, then two below and two above, ...),
every operation in float32 as Chainer's numpy expressions, so ``u`` and the
gradient's arithmetic are Chainer's. The power ``u ** -beta`` is numpy's
(Chainer's), except for ``beta = 0.75`` (the paper's networks, Chainer's
default), computed as ``r * sqrt(r)`` with ``r = 1 / sqrt(u)`` inside the
kernel: numba has no vectorised power, and numpy's takes about 3 ns a value
on one thread. That form is within 2 float32 roundings of the power.
"""
import chainer
import numpy

from branchynet.links.kernelthreads import run_split

_kernels = {}


def _compiled():
    if _kernels:
        return _kernels['forward'], _kernels['backward']
    import numba
    jit = numba.njit(boundscheck=False, nogil=True, cache=True, error_model='numpy')
    f32 = numpy.float32

    @jit
    def window_sum(a, c, half, out):
        """``out`` = channel ``c`` of ``a`` plus its neighbours, in Chainer's order."""
        channels, p = a.shape
        for j in range(p):
            out[j] = a[c, j]
        for i in range(1, half + 1):
            if c - i >= 0:
                for j in range(p):
                    out[j] += a[c - i, j]
            if c + i < channels:
                for j in range(p):
                    out[j] += a[c + i, j]

    @jit
    def forward(x, y, u, s, half, k, alpha, root_form, start, stop):
        _, channels, p = x.shape
        squares = numpy.empty((channels, p), numpy.float32)
        window = numpy.empty(p, numpy.float32)
        for n in range(start, stop):
            for c in range(channels):
                for j in range(p):
                    squares[c, j] = x[n, c, j] * x[n, c, j]
            for c in range(channels):
                window_sum(squares, c, half, window)
                for j in range(p):
                    u[n, c, j] = k + alpha * window[j]
                if root_form:
                    for j in range(p):
                        r = f32(1) / numpy.sqrt(u[n, c, j])
                        s[n, c, j] = r * numpy.sqrt(r)
                        y[n, c, j] = x[n, c, j] * s[n, c, j]

    @jit
    def backward(x, y, gy, u, s, gx, half, two_alpha_beta, start, stop):
        _, channels, p = x.shape
        summand = numpy.empty((channels, p), numpy.float32)
        window = numpy.empty(p, numpy.float32)
        for n in range(start, stop):
            for c in range(channels):
                for j in range(p):
                    summand[c, j] = y[n, c, j] * gy[n, c, j] / u[n, c, j]
            for c in range(channels):
                window_sum(summand, c, half, window)
                for j in range(p):
                    gx[n, c, j] = gy[n, c, j] * s[n, c, j] - \
                        two_alpha_beta * x[n, c, j] * window[j]

    _kernels.update(forward=forward, backward=backward)
    return forward, backward


class LocalResponseNormalizationCPU(chainer.FunctionNode):
    """``F.local_response_normalization`` on float32 CPU arrays (N, C, ...)
    (no double backpropagation)."""

    def __init__(self, n=5, k=2, alpha=1e-4, beta=.75):
        self.half, self.k, self.alpha, self.beta = int(n) // 2, k, alpha, beta

    def forward(self, inputs):
        x, = inputs
        x3 = numpy.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
        y, u, s = (numpy.empty_like(x3) for _ in range(3))
        root_form = self.beta == .75
        forward, _ = _compiled()
        run_split(forward, len(x3), x3, y, u, s, self.half, numpy.float32(self.k),
                  numpy.float32(self.alpha), root_form)
        if not root_form:  # Chainer's power and product
            s = u ** -self.beta
            y = x3 * s
        self.x3, self.y, self.u, self.s = x3, y, u, s
        return y.reshape(x.shape),

    def backward(self, indexes, grad_outputs):
        gy = numpy.ascontiguousarray(grad_outputs[0].array).reshape(self.x3.shape)
        gx = numpy.empty_like(gy)
        _, backward = _compiled()
        run_split(backward, len(gy), self.x3, self.y, gy, self.u, self.s, gx, self.half,
                  numpy.float32(2 * self.alpha * self.beta))
        return chainer.Variable(gx.reshape(grad_outputs[0].shape)),


def local_response_normalization(x, n=5, k=2, alpha=1e-4, beta=.75):
    """``LocalResponseNormalizationCPU`` applied to ``x``."""
    return LocalResponseNormalizationCPU(n, k, alpha, beta).apply((x,))[0]
