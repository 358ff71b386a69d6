"""A lean inference path compiled from a trained BranchyNet.

At batch size 1 plain Chainer is bound by per-call overhead (building
Variables and FunctionNodes, type checks, config look-ups), not arithmetic,
so the layers an early exit saves turn into little saved time. This module
compiles the same link tree and weights into plain array operations (numpy
on the CPU, cupy on a GPU):

* convolutions as one gather (precomputed im2col indices into a reused,
  zero-padded buffer) and one matrix product, BatchNormalization folded
  into the preceding convolution;
* pooling as strided slices, LRN as Chainer computes it, dropout removed;
* links it does not know run through Chainer (correct, just not faster);
  a Chain may provide ``to_fast(compiler)`` to compile itself (ResBlock does).

``FastBranchyNet(net).predict(x, thresholds)`` gives the same labels and
exits as ``net.predict`` (up to float rounding in the last bits).
The compiled path snapshots the weights: recompile after training further.
"""
import inspect

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.links import FL, SL, Net
from branchynet.net import route_batch
from branchynet.timing import NULL_TIMER


def _bound(fn, args, kwargs):
    """The named arguments of an FL's call, defaults filled in."""
    sig = inspect.signature(fn)
    bound = sig.bind(None, *args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Compiler:
    """Turns links into array functions ``f(x) -> y`` on ``xp`` arrays."""

    def __init__(self, xp):
        self.xp = xp

    def array(self, a):
        return None if a is None else self.xp.asarray(a)

    # ------------------------------------------------------------ sequences
    def sequence(self, links):
        """Compile a list of links into one function, fusing Conv+BN pairs."""
        ops, i = [], 0
        links = list(links)
        while i < len(links):
            link = links[i]
            nxt = links[i + 1] if i + 1 < len(links) else None
            if isinstance(link, L.Convolution2D) and isinstance(nxt, L.BatchNormalization):
                ops.append(self.conv(link, bn=nxt))
                i += 2
                continue
            ops.append(self.link(link))
            i += 1
        ops = [op for op in ops if op is not None]

        def run(x):
            for op in ops:
                x = op(x)
            return x
        return run

    def link(self, link):
        if isinstance(link, L.Convolution2D):
            return self.conv(link)
        if isinstance(link, L.Linear):
            return self.linear(link)
        if isinstance(link, L.BatchNormalization):
            return self.batchnorm(link)
        if isinstance(link, FL):
            return self.function(link)
        if isinstance(link, SL):
            return None  # training-only layer: identity at test time
        if hasattr(link, 'to_fast'):
            return link.to_fast(self)
        if isinstance(link, Net):
            return self.sequence(list(link))
        return self.fallback(link)

    def fallback(self, link):
        """Run an unknown link through Chainer (test mode, no graph)."""
        def run(x):
            with chainer.using_config('train', False), chainer.no_backprop_mode():
                y = link(x)
            return y.array if isinstance(y, chainer.Variable) else y
        return run

    # ---------------------------------------------------------------- layers
    def conv(self, link, bn=None):
        if link.groups != 1 or _pair(link.dilate) != (1, 1):
            return self.fallback(link)
        xp = self.xp
        w = link.W.array.astype(numpy.float32)
        b = link.b.array if link.b is not None else xp.zeros(w.shape[0], numpy.float32)
        if bn is not None:  # fold test-mode BN: gamma * (y - mean) / sqrt(var + eps) + beta
            scale = bn.gamma.array / xp.sqrt(bn.avg_var + bn.eps)
            w = w * scale[:, None, None, None]
            b = (b - bn.avg_mean) * scale + bn.beta.array
        out_c, in_c, kh, kw = w.shape
        w2 = xp.ascontiguousarray(w.reshape(out_c, -1))
        b2 = xp.ascontiguousarray(b.reshape(1, out_c, 1).astype(numpy.float32))
        sy, sx = _pair(link.stride)
        ph, pw = _pair(link.pad)
        plans = {}

        def plan(shape):
            n, c, h, wd = shape
            hp, wp = h + 2 * ph, wd + 2 * pw
            ho, wo = (hp - kh) // sy + 1, (wp - kw) // sx + 1
            padded = xp.zeros((n, c, hp, wp), numpy.float32) if (ph or pw) else None
            return padded, ho, wo

        def run(x):
            key = x.shape
            if key not in plans:
                plans[key] = plan(key)
            padded, ho, wo = plans[key]
            if padded is not None:
                padded[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
                x = padded
            n, c = x.shape[:2]
            s = x.strides
            # im2col as a strided view (C, kh, kw, Ho, Wo) per sample; the
            # reshape makes the one copy the matrix product needs.
            view = xp.lib.stride_tricks.as_strided(
                x, shape=(n, c, kh, kw, ho, wo),
                strides=(s[0], s[1], s[2], s[3], s[2] * sy, s[3] * sx))
            cols = view.reshape(n, c * kh * kw, ho * wo)
            y = xp.matmul(w2, cols[0])[None] if n == 1 else xp.matmul(w2, cols)
            y += b2
            return y.reshape(n, out_c, ho, wo)
        return run

    def linear(self, link):
        xp = self.xp
        wt = xp.ascontiguousarray(link.W.array.T)
        b = link.b.array if link.b is not None else None

        def run(x):
            y = xp.matmul(x.reshape(len(x), -1), wt)
            if b is not None:
                y += b
            return y
        return run

    def batchnorm(self, link):
        xp = self.xp
        scale = link.gamma.array / xp.sqrt(link.avg_var + link.eps)
        shift = link.beta.array - link.avg_mean * scale
        shape = (1, -1, 1, 1)
        scale, shift = scale.reshape(shape), shift.reshape(shape)

        def run(x):
            return x * scale + shift
        return run

    def function(self, fl):
        xp = self.xp
        fn = fl.fn
        if fn is F.relu:
            return lambda x: xp.maximum(x, 0)
        if fn is F.dropout:
            return None
        if fn is F.max_pooling_2d:
            a = _bound(fn, fl.args, fl.kwargs)
            return self.pool(a['ksize'], a['stride'], a['pad'], a['cover_all'], 'max')
        if fn is F.average_pooling_2d:
            a = _bound(fn, fl.args, fl.kwargs)
            if a.get('pad_value', 0) is not None and a.get('pad_value', 0) != 0:
                return self.fallback(fl)
            return self.pool(a['ksize'], a['stride'], a['pad'], False, 'mean')
        if fn is F.local_response_normalization:
            a = _bound(fn, fl.args, fl.kwargs)
            return self.lrn(a['n'], a['k'], a['alpha'], a['beta'])
        return self.fallback(fl)

    def pool(self, ksize, stride, pad, cover_all, kind):
        xp = self.xp
        kh, kw = _pair(ksize)
        sy, sx = _pair(stride if stride is not None else ksize)
        ph, pw = _pair(pad)
        fill = -numpy.inf if kind == 'max' else 0.
        plans = {}

        def out_size(size, k, s, p):
            if cover_all:
                return (size + 2 * p - k + s - 1) // s + 1
            return (size + 2 * p - k) // s + 1

        def run(x):
            n, c, h, w = x.shape
            key = x.shape
            if key not in plans:
                ho, wo = out_size(h, kh, sy, ph), out_size(w, kw, sx, pw)
                need_h, need_w = (ho - 1) * sy + kh, (wo - 1) * sx + kw
                buf = None
                if ph or pw or need_h > h or need_w > w:
                    buf = xp.full((n, c, max(need_h, h + 2 * ph), max(need_w, w + 2 * pw)),
                                  fill, dtype=numpy.float32)
                plans[key] = (ho, wo, buf)
            ho, wo, buf = plans[key]
            if buf is not None:
                buf[:, :, ph:ph + h, pw:pw + w] = x
                x = buf
            out = None
            for di in range(kh):
                for dj in range(kw):
                    s = x[:, :, di:di + sy * (ho - 1) + 1:sy, dj:dj + sx * (wo - 1) + 1:sx]
                    if out is None:
                        out = s.copy()
                    elif kind == 'max':
                        xp.maximum(out, s, out=out)
                    else:
                        out += s
            if kind == 'mean':
                out /= kh * kw
            return out
        return run

    def lrn(self, n, k, alpha, beta):
        """As Chainer computes it: x * (k + alpha * sum of x^2 over n channels)^-beta."""
        half = n // 2

        def run(x):
            x2 = x * x
            s = x2.copy()
            for i in range(1, half + 1):
                s[:, i:] += x2[:, :-i]
                s[:, :-i] += x2[:, i:]
            return x * (k + alpha * s) ** -beta
        return run


def softmax(z, xp):
    """Row softmax computed the way chainer.functions.softmax does."""
    y = z - z.max(axis=1, keepdims=True)
    xp.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)
    return y


class FastBranchyNet:
    """Compiled early-exit inference for a trained BranchyNet (same answers).

    Provides ``predict``, ``predict_main`` and the ``_route``/``_main_route``
    engine interface used by ``branchynet.utils.measure_*``.
    """

    def __init__(self, net):
        self.net = net
        self.xp = net.xp
        compiler = Compiler(self.xp)
        self.segments = [compiler.sequence(net.trunk[slice(*net._segment_bounds(n))])
                         for n in range(net.numexits())]
        self.heads = [compiler.sequence(list(head)) for head in net.branches]
        self.main_trunk = compiler.sequence(list(net.trunk))
        self.input_shape = net.input_shape

    def numexits(self):
        return len(self.heads)

    def send(self, x):
        return self.net.send(x)

    def _route(self, x, thresholds, timer=NULL_TIMER):
        return route_batch(self.segments, self.heads, x, thresholds, self.xp, timer,
                           self.net.confidence)

    def _main_route(self, x, timer=NULL_TIMER):
        xp = self.xp
        with timer.stage('trunk'):
            h = self.main_trunk(x)
        with timer.stage('head'):
            z = self.heads[-1](h)
        with timer.stage('decision'):
            labels = softmax(z, xp).argmax(axis=1).astype(numpy.int32)
        return labels, numpy.full(len(labels), self.numexits() - 1, dtype=numpy.int32)

    def predict(self, x, thresholds=None, batchsize=None):
        """As ``BranchyNet.predict``: ``(labels, exits)`` numpy int32 arrays."""
        return self.net._predict_with(self, x, thresholds, batchsize)

    def predict_main(self, x, batchsize=None):
        return self.net._predict_main_with(self, x, batchsize)
