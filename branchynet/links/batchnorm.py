"""Batch normalisation for CPU training in numba, optionally fused with what follows it.

``batch_normalization(link, x, relu, shortcut)`` computes, in training mode,
``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with the batch's mean and
(biased) variance per channel, as ``L.BatchNormalization`` does, then adds
``shortcut`` (a residual block's) and applies ReLU when asked: one pass to
sum, one for the variance, one to write ``y``, where Chainer's functions make
a dozen passes over the activations (mean, variance, the normalised copy,
the scaled copy, the addition, ReLU, each again in the backward pass). The
link's running statistics are updated as Chainer's function updates them
(``decay``, the unbiased variance ``m / (m - 1)``).

A channel's sums are float32 sums of each sample's row (vectorised,
reassociated), added up in float64 (Chainer sums float32 pairwise), so
results agree with Chainer's to float32 rounding. The forward pass keeps a
byte per value saying where the output was positive: ReLU's gradient reads
it instead of the four-byte output. The backward pass computes the input,
``gamma``, ``beta`` (and, where a shortcut was added, its) gradients
directly: no double backpropagation.
"""
import chainer
import numpy

from branchynet.links.kernelthreads import run_split

_kernels = {}


def _compiled():
    """The forward and backward kernels, compiled on first use (and cached on disk)."""
    if _kernels:
        return _kernels['forward'], _kernels['backward']
    import numba
    # reassociated sums: vectorised channel sums (in float64, as before)
    jit = numba.njit(boundscheck=False, nogil=True, cache=True, error_model='numpy',
                     fastmath={'reassoc', 'contract', 'nsz', 'arcp'})

    @jit
    def forward(x, gamma, beta, eps, relu, shortcut, use_shortcut, y, mask, mean, variance,
                inv_std, c0, c1):
        n, _, p = x.shape
        m = n * p
        for c in range(c0, c1):
            s = 0.0
            for i in range(n):  # float32 sums of a row, added up in float64
                r = numpy.float32(0)
                for j in range(p):
                    r += x[i, c, j]
                s += r
            mu = s / m
            mu32 = numpy.float32(mu)
            v = 0.0
            for i in range(n):
                r = numpy.float32(0)
                for j in range(p):
                    d = x[i, c, j] - mu32
                    r += d * d
                v += r
            var = numpy.float32(v / m)
            istd = numpy.float32(1.0) / numpy.sqrt(var + numpy.float32(eps))
            mean[c], variance[c], inv_std[c] = mu, v / m, istd
            g, b = gamma[c] * istd, beta[c]
            for i in range(n):
                for j in range(p):
                    out = (x[i, c, j] - mu32) * g + b
                    if use_shortcut:
                        out += shortcut[i, c, j]
                    if relu:  # numpy.maximum(out, 0): NaN stays NaN
                        mask[i, c, j] = out > 0
                        if out <= 0:
                            out = numpy.float32(0)
                    y[i, c, j] = out

    @jit
    def backward(x, mask, gy, gamma, mean, inv_std, relu, gx, ggamma, gbeta, gpass, keep_pass,
                 c0, c1):
        n, _, p = x.shape
        m = n * p
        one, zero = numpy.float32(1), numpy.float32(0)
        for c in range(c0, c1):
            mu, istd = numpy.float32(mean[c]), inv_std[c]
            sb, sg = 0.0, 0.0
            for i in range(n):
                rb, rg = numpy.float32(0), numpy.float32(0)
                for j in range(p):
                    g = gy[i, c, j]
                    if relu:  # Chainer's gy * (y > 0): an infinite gy times 0 is NaN
                        g = g * (one if mask[i, c, j] else zero)
                    if keep_pass:
                        gpass[i, c, j] = g
                    rb += g
                    rg += g * ((x[i, c, j] - mu) * istd)
                sb += rb
                sg += rg
            gb, gg = numpy.float32(sb), numpy.float32(sg)
            gbeta[c], ggamma[c] = gb, gg
            scale = gamma[c] * istd
            for i in range(n):
                for j in range(p):
                    g = gy[i, c, j]
                    if relu:
                        g = g * (one if mask[i, c, j] else zero)
                    x_hat = (x[i, c, j] - mu) * istd
                    gx[i, c, j] = scale * (g - (x_hat * gg + gb) / m)

    _kernels.update(forward=forward, backward=backward)
    return forward, backward


class BatchNormalizationCPU(chainer.FunctionNode):
    """Training-mode batch normalisation (+ shortcut) (+ ReLU) on (N, C, ...) float32."""

    def __init__(self, eps, relu, running, decay):
        self.eps, self.relu = eps, relu
        self.running, self.decay = running, decay

    def forward(self, inputs):
        x, gamma, beta = inputs[:3]
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        has_shortcut = len(inputs) == 4
        shortcut = numpy.ascontiguousarray(inputs[3]).reshape(n, c, -1) if has_shortcut else x3
        y = numpy.empty_like(x3)
        # where the output is positive (one byte a value), for ReLU's gradient
        mask = numpy.empty(x3.shape if self.relu else (0, 0, 0), numpy.bool_)
        mean, variance = numpy.empty(c, numpy.float64), numpy.empty(c, numpy.float64)
        inv_std = numpy.empty(c, numpy.float32)
        forward, _ = _compiled()
        run_split(forward, c, x3, gamma, beta, self.eps, self.relu, shortcut,
                  has_shortcut, y, mask, mean, variance, inv_std)
        if self.running is not None:
            avg_mean, avg_var = self.running
            m = x3.shape[0] * x3.shape[2]
            avg_mean *= self.decay
            avg_mean += (1 - self.decay) * mean.astype(numpy.float32)
            avg_var *= self.decay
            avg_var += (1 - self.decay) * (m / max(m - 1., 1.)) * variance.astype(numpy.float32)
        self.x3, self.mask, self.mean, self.inv_std = x3, mask, mean, inv_std
        self.retain_inputs((1,))
        return y.reshape(x.shape),

    def backward(self, indexes, grad_outputs):
        gamma, = self.get_retained_inputs()
        gy = numpy.ascontiguousarray(grad_outputs[0].array).reshape(self.x3.shape)
        c = gy.shape[1]
        keep_pass = 3 in indexes  # the shortcut's gradient: the one after ReLU
        gx = numpy.empty_like(gy)
        gpass = numpy.empty_like(gy) if keep_pass else numpy.empty((0, 0, 0), gy.dtype)
        ggamma, gbeta = numpy.empty(c, numpy.float32), numpy.empty(c, numpy.float32)
        _, backward = _compiled()
        run_split(backward, c, self.x3, self.mask, gy, gamma.array, self.mean,
                  self.inv_std, self.relu, gx, ggamma, gbeta, gpass, keep_pass)
        shape = grad_outputs[0].shape
        grads = {0: gx.reshape(shape), 1: ggamma, 2: gbeta}
        if keep_pass:
            grads[3] = gpass.reshape(shape)
        return tuple(chainer.Variable(grads[i]) for i in indexes)


def usable(link, x):
    """Whether ``link`` (an ``L.BatchNormalization``) on ``x`` runs here: training
    mode, float32 numpy input with channels on axis 1, a learnt ``gamma`` and
    ``beta``, running statistics being updated (not fine-tuning, not recomputing)."""
    array = x.array if isinstance(x, chainer.Variable) else x
    return (isinstance(array, numpy.ndarray) and array.dtype == numpy.float32
            and array.ndim >= 2 and link.axis is None and link.gamma is not None
            and link.beta is not None and link.gamma.array is not None
            and link.gamma.ndim == 1 and link.beta.dtype == numpy.float32
            and link.gamma.dtype == numpy.float32 and link.avg_mean is not None
            and not chainer.config.in_recomputing and array.shape[1] == link.gamma.shape[0])


def batch_normalization(link, x, relu=False, shortcut=None):
    """``link(x)`` (+ ``shortcut``) (then ReLU) in training mode through the kernels above."""
    args = (x, link.gamma, link.beta) + ((shortcut,) if shortcut is not None else ())
    node = BatchNormalizationCPU(link.eps, relu, (link.avg_mean, link.avg_var), link.decay)
    return node.apply(args)[0]
