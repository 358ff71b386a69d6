"""A lean inference path compiled from a trained BranchyNet.

At batch size 1 plain Chainer is bound by per-call overhead (building
Variables and FunctionNodes, type checks, config look-ups), not arithmetic,
so the layers an early exit saves turn into little saved time. This module
compiles the same link tree and weights into plain array operations (numpy
on the CPU, cupy on a GPU):

* a convolution is one copy into a reused im2col buffer and one matrix
  product (bias folded into the product as a row of ones, test-mode
  BatchNormalization folded into the weights). For stride-1 convolutions the
  im2col rows are taken over the *padded* width, so every row is one long
  contiguous run of the padded input (cheap to copy); the extra columns are
  computed and ignored. Results are views in channels-last memory order
  (the product's faster orientation) with the usual (N, C, H, W) shape;
* max pooling as strided slices, with a neighbouring ReLU fused in; LRN as
  Chainer computes it; dropout removed;
* links it does not know run through Chainer (correct, just not faster);
  a Chain may provide ``to_fast(compiler)`` to compile itself (ResBlock does).

Buffers are kept per input shape (a few shapes per layer, small ones only)
and per thread, so an array a compiled function returns is overwritten by
that function's next call on the same thread: consume it first
(``route_batch`` does). One FastBranchyNet may be called from several
threads at once; each thread that calls it keeps buffers of its own.

``FastBranchyNet(net).predict(x, thresholds)`` gives the same labels and
exits as ``net.predict`` (up to float rounding in the last bits).
The compiled path snapshots the weights: recompile after training further.
"""
import collections
import threading

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.engines.base import InferenceEngine
from branchynet.links import FL, SL, Net, is_function, pair
from branchynet.engines.routing import exit_steps
from branchynet.measures.timing import NULL_TIMER
from branchynet.validation import require_network

#: Buffers of one plan larger than this are allocated per call instead of kept.
CACHE_BYTES = 8 << 20
#: Input shapes whose buffers one compiled layer keeps (least recently used go).
CACHE_SHAPES = 4
#: A batch is run in chunks of as many samples as keep the largest buffers
#: of one layer (im2col, output) within this many bytes: the buffers then
#: stay in the caches (B-LeNet ran slower at batch 512 than at 64 without).
CHUNK_BYTES = 8 << 20


def folded_conv_weights(conv, bn=None, xp=numpy):
    """A convolution's float32 weights and bias with a following test-mode
    BatchNormalization folded in: gamma * (y - mean) / sqrt(var + eps) + beta."""
    w = conv.W.array.astype(numpy.float32)
    b = conv.b.array if conv.b is not None else xp.zeros(w.shape[0], numpy.float32)
    if bn is not None:
        scale = bn.gamma.array / xp.sqrt(bn.avg_var + bn.eps)
        w = w * scale[:, None, None, None]
        b = (b - bn.avg_mean) * scale + bn.beta.array
    return w, b.astype(numpy.float32)


class _Plans:
    """Per-input-shape plans of one compiled layer: a small LRU cache per thread.

    ``get(shape)`` returns ``build(shape)``'s plan, built once while it is
    among the calling thread's ``CACHE_SHAPES`` most recent shapes and no
    larger than ``CACHE_BYTES`` (``build`` returns ``(plan, nbytes)``);
    larger plans are built for every call, so batch inference does not pin
    big buffers. A plan's buffers are written by every call, so threads
    never share one: each thread has its own cache (``threading.local``).
    """

    def __init__(self, build, record=None):
        self.build = build
        self.record = record
        self.local = threading.local()

    def get(self, shape):
        try:
            plans = self.local.plans
        except AttributeError:  # this thread's first call
            plans = self.local.plans = collections.OrderedDict()
        plan = plans.get(shape)
        if plan is not None:
            plans.move_to_end(shape)
            return plan
        plan, nbytes = self.build(shape)
        if self.record is not None:
            self.record(nbytes / max(1, shape[0]))
        if nbytes <= CACHE_BYTES:
            plans[shape] = plan
            if len(plans) > CACHE_SHAPES:
                plans.popitem(last=False)
        return plan


def fused_layers(links):
    """``links`` as ``(link, bn, relu)`` groups, each computed as one layer:
    a convolution with the BatchNormalization after it (``bn``) and a ReLU
    after that, a linear layer or max pooling with the ReLU after it, and a
    ReLU before max pooling (the two commute) as that pooling with ``relu``.
    Every other link is a group of its own. Shared by the compiled paths."""
    links = list(links)
    i = 0
    while i < len(links):
        link = links[i]
        nxt = links[i + 1] if i + 1 < len(links) else None
        if is_function(link, F.relu) and is_function(nxt, F.max_pooling_2d):
            yield nxt, None, True
            i += 2
        elif isinstance(link, L.Convolution2D):
            bn = nxt if isinstance(nxt, L.BatchNormalization) else None
            j = i + 1 + (bn is not None)
            relu = j < len(links) and is_function(links[j], F.relu)
            yield link, bn, relu
            i = j + relu
        elif isinstance(link, L.Linear) or is_function(link, F.max_pooling_2d):
            relu = is_function(nxt, F.relu)
            yield link, None, relu
            i += 1 + relu
        else:
            yield link, None, False
            i += 1


def pool_output_size(size, k, s, p, cover_all):
    """Output length of a pooling window ``k``, stride ``s``, padding ``p`` on
    ``size`` inputs, as Chainer counts it."""
    if cover_all:
        return (size + 2 * p - k + s - 1) // s + 1
    return (size + 2 * p - k) // s + 1


def pool_axis_ops(axis, size, k, s, p, count):
    """The slice operations that pool one axis: ``(op, out index, in index)``.

    Window offset ``d`` reads input ``o*s + d - p`` for output ``o``; only the
    outputs whose input lies inside ``0 .. size-1`` take part. 'pair' writes
    the whole output from two offsets that cover every output, 'copy' from
    one, 'combine' folds one more offset into the outputs it covers.
    """
    def index(sl):
        idx = [slice(None)] * 4
        idx[axis] = sl
        return tuple(idx)
    taps = []
    for d in range(k):
        lo = max(0, -((d - p) // s))                  # first o: o*s + d - p >= 0
        hi = min(count, (size - 1 - d + p) // s + 1)  # last o: o*s + d - p < size
        if hi > lo:
            i0 = lo * s + d - p
            taps.append((index(slice(lo, hi)),
                         index(slice(i0, i0 + s * (hi - lo - 1) + 1, s)),
                         lo == 0 and hi == count))
    taps.sort(key=lambda tap: not tap[2])  # full-coverage offsets first
    full = [i for _, i, f in taps if f]
    if len(full) >= 2:  # the first two make the output in one operation
        return [('pair', None, tuple(full[:2]))] + \
            [('combine', o, i) for o, i, _ in taps[2:]]
    return [('copy' if j == 0 and f else 'combine', o, i)
            for j, (o, i, f) in enumerate(taps)]


def pooling(xp, make_plans, ksize, stride, pad, cover_all, kind, relu=False):
    """Max or mean pooling, one axis at a time (kh + kw slice operations, not
    kh * kw): along the width into a buffer, then along the height, with a
    following ReLU fused in. ``make_plans(build)`` keeps the buffers of each
    input shape (``Compiler.plans``).

    Windows that reach past the input (``cover_all``, padding) use only the
    input elements they cover for max pooling; mean pooling divides by the
    full window (padding counts as zeros), as Chainer does.
    """
    kh, kw = pair(ksize)
    sy, sx = pair(stride if stride is not None else ksize)
    ph, pw = pair(pad)
    combine = xp.maximum if kind == 'max' else xp.add
    empty = -numpy.inf if kind == 'max' else 0.

    def build(shape):
        n, c, h, w = shape
        ho = pool_output_size(h, kh, sy, ph, cover_all)
        wo = pool_output_size(w, kw, sx, pw, cover_all)
        tmp = xp.empty((n, c, h, wo), numpy.float32)
        out = xp.empty((n, c, ho, wo), numpy.float32)
        passes = ((tmp, pool_axis_ops(3, w, kw, sx, pw, wo)),
                  (out, pool_axis_ops(2, h, kh, sy, ph, ho)))
        return passes, tmp.nbytes + out.nbytes

    plans = make_plans(build)

    def run(x):
        for dst, ops in plans.get(x.shape):
            if ops[0][0] == 'combine':  # no window offset covers every output
                dst.fill(empty)
            for op, o, i in ops:
                if op == 'pair':
                    combine(x[i[0]], x[i[1]], out=dst)
                elif op == 'copy':
                    xp.copyto(dst, x[i])
                else:
                    region = dst[o]
                    combine(region, x[i], out=region)
            x = dst
        if kind == 'mean':
            x /= kh * kw
        elif relu:
            xp.maximum(x, 0, out=x)
        return x
    return run


class Compiler:
    """Turns links into array functions ``f(x) -> y`` on ``xp`` arrays."""

    def __init__(self, xp):
        self.xp = xp
        #: the largest buffers one layer built so far, in bytes per sample
        self.sample_bytes = 0

    def plans(self, build):
        """``_Plans`` for ``build`` that report their size to ``sample_bytes``."""
        def record(per_sample):
            self.sample_bytes = max(self.sample_bytes, per_sample)
        return _Plans(build, record)

    def array(self, a):
        return None if a is None else self.xp.asarray(a)

    def strided(self, base, shape, strides):
        """A view of ``base`` with element (not byte) ``strides``."""
        item = base.itemsize
        return self.xp.lib.stride_tricks.as_strided(
            base, shape=shape, strides=tuple(s * item for s in strides))

    # ------------------------------------------------------------ sequences
    def sequence(self, links):
        """Compile a list of links into one function.

        Fuses Conv+BN pairs, and a ReLU into the layer before it (convolution,
        linear, max pooling) or into the max pooling after it (the two
        commute). A sequence never writes into its input array.
        """
        ops = []
        for link, bn, relu in fused_layers(links):
            if isinstance(link, L.Convolution2D):
                op = self.conv(link, bn=bn, relu=relu)
            elif isinstance(link, L.Linear):
                op = self.linear(link, relu)
            elif relu:  # max pooling
                op = self.function(link, relu=True)
            else:
                op = self.link(link)
            if op is not None:
                ops.append(op)

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
        if isinstance(link, SL) and link.fnTest is None:
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
    def conv(self, link, bn=None, relu=False):
        """Convolution (+ folded BN, + ReLU) as one copy and one matmul."""
        if link.groups != 1 or pair(link.dilate) != (1, 1):
            return self._chain(self.fallback(link), bn, relu)
        xp = self.xp
        w, b = folded_conv_weights(link, bn, xp)
        out_c, in_c, kh, kw = w.shape
        k = in_c * kh * kw
        # (K + 1, O): the weights with the bias as one more input row (of ones)
        w_aug = xp.ascontiguousarray(
            xp.concatenate([w.reshape(out_c, k), b.reshape(out_c, 1)], axis=1).T
        ).astype(numpy.float32)
        sy, sx = pair(link.stride)
        ph, pw = pair(link.pad)
        grid = sy == 1 and sx == 1

        def build(shape):
            n, c, h, wd = shape
            hp, wp = h + 2 * ph, wd + 2 * pw
            ho, wo = (hp - kh) // sy + 1, (wp - kw) // sx + 1
            # the padded input, flat, with kw spare elements for the grid's last row
            flat = xp.zeros(n * c * hp * wp + kw, numpy.float32)
            padded = flat[:n * c * hp * wp].reshape(n, c, hp, wp)
            inner = padded[:, :, ph:ph + h, pw:pw + wd]
            if grid:  # rows over the padded width: (C, kh, kw, N, Ho * Wp), one run each
                cols_w = wp
                src = self.strided(flat, (c, kh, kw, n, ho * wp),
                                   (hp * wp, wp, 1, c * hp * wp, 1))
            else:
                cols_w = wo
                src = self.strided(flat, (c, kh, kw, n, ho, wo),
                                   (hp * wp, wp, 1, c * hp * wp, sy * wp, sx))
            p = ho * cols_w
            cols = xp.empty((k + 1, n * p), numpy.float32)
            cols[k] = 1
            dst = cols[:k].reshape(src.shape)
            y = xp.empty((n * p, out_c), numpy.float32)
            out = y.reshape(n, ho, cols_w, out_c).transpose(0, 3, 1, 2)[:, :, :, :wo]
            plan = (inner, src, dst, cols.T, y, out)
            return plan, flat.nbytes + cols.nbytes + y.nbytes

        plans = self.plans(build)

        def run(x):
            inner, src, dst, cols_t, y, out = plans.get(x.shape)
            inner[...] = x
            xp.copyto(dst, src)
            xp.matmul(cols_t, w_aug, out=y)
            if relu:
                xp.maximum(y, 0, out=y)
            return out
        return run

    def _chain(self, op, bn, relu):
        """``op`` followed by a BN layer and/or a ReLU (unfused); ``op`` itself
        when there is neither."""
        after = [f for f in (self.batchnorm(bn) if bn is not None else None,
                             (lambda h: self.xp.maximum(h, 0)) if relu else None) if f]
        if not after:
            return op

        def run(x):
            x = op(x)
            for f in after:
                x = f(x)
            return x
        return run

    def linear(self, link, relu=False):
        xp = self.xp
        wt = xp.ascontiguousarray(link.W.array.T)
        b = link.b.array if link.b is not None else None

        def build(shape):
            y = xp.empty((shape[0], wt.shape[1]), numpy.float32)
            return y, y.nbytes

        plans = self.plans(build)

        def run(x):
            y = plans.get(x.shape)
            xp.matmul(x.reshape(len(x), -1), wt, out=y)
            if b is not None:
                y += b
            if relu:
                xp.maximum(y, 0, out=y)
            return y
        return run

    def batchnorm(self, link):
        xp = self.xp
        scale = link.gamma.array / xp.sqrt(link.avg_var + link.eps)
        shift = link.beta.array - link.avg_mean * scale

        # per channel: axis 1 of (N, C) or (N, C, H, W) inputs alike
        forms = {ndim: (scale.reshape((1, -1) + (1,) * (ndim - 2)),
                        shift.reshape((1, -1) + (1,) * (ndim - 2))) for ndim in (2, 3, 4)}

        def run(x):
            s, t = forms[x.ndim]
            return x * s + t
        return run

    def function(self, fl, relu=False):
        xp = self.xp
        fn = fl.fn
        if fn is F.relu:
            return lambda x: xp.maximum(x, 0)
        if fn is F.dropout:
            return None
        if fn is F.max_pooling_2d:
            a = fl.bound_arguments()
            return self.pool(a['ksize'], a['stride'], a['pad'], a['cover_all'], 'max', relu)
        if fn is F.average_pooling_2d:
            a = fl.bound_arguments()
            if a.get('pad_value', 0) is not None and a.get('pad_value', 0) != 0:
                return self.fallback(fl)
            return self.pool(a['ksize'], a['stride'], a['pad'], False, 'mean')
        if fn is F.local_response_normalization:
            a = fl.bound_arguments()
            return self.lrn(a['n'], a['k'], a['alpha'], a['beta'])
        return self.fallback(fl)

    def pool(self, ksize, stride, pad, cover_all, kind, relu=False):
        """Max or mean pooling (see ``pooling``), its buffers kept per input shape."""
        return pooling(self.xp, self.plans, ksize, stride, pad, cover_all, kind, relu)

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


class FastBranchyNet(InferenceEngine):
    """Compiled early-exit inference for a trained BranchyNet (same answers).

    Provides ``predict``, ``predict_main`` and the engine interface used by
    ``branchynet.evaluation.measurement`` (see ``branchynet.engines.base``).
    """

    def __init__(self, net):
        self.net = require_network(net)
        self.xp = net.xp
        compiler = Compiler(self.xp)
        self.segments = [compiler.sequence(net.trunk[slice(*net.segment_bounds(n))])
                         for n in range(net.numexits())]
        self.heads = [compiler.sequence(net.head_links(n)) for n in range(net.numexits())]
        self.steps = exit_steps(self.segments, self.heads)
        self.main_trunk = compiler.sequence(list(net.trunk))
        self.input_shape = net.input_shape
        self.chunk = self._chunk_size(compiler)

    def _chunk_size(self, compiler):
        """Samples per chunk of a batch (``CHUNK_BYTES``), learnt from the
        buffers one sample builds; no chunking for networks without
        ``input_shape`` or on a GPU (the chunks are sized for CPU caches)."""
        if self.input_shape is None or self.xp is not numpy:
            return None
        x = self.xp.zeros((1,) + tuple(self.input_shape), numpy.float32)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            h = x
            for step in self.steps:
                h, _ = step(h, NULL_TIMER)
            self.main_logits(x, NULL_TIMER)
        return max(1, int(CHUNK_BYTES // max(1, compiler.sample_bytes)))

    def _chunked(self, run, x):
        if self.chunk is None or len(x) <= self.chunk:
            return run(x)
        parts = [run(x[i:i + self.chunk]) for i in range(0, len(x), self.chunk)]
        return tuple(self.xp.concatenate(p) for p in zip(*parts))

    def route(self, x, thresholds, timer=NULL_TIMER):
        return self._chunked(lambda xc: InferenceEngine.route(self, xc, thresholds, timer), x)

    def main_route(self, x, timer=NULL_TIMER):
        return self._chunked(lambda xc: InferenceEngine.main_route(self, xc, timer), x)

    def main_logits(self, x, timer):
        with timer.stage('trunk'):
            h = self.main_trunk(x)
        with timer.stage('head'):
            return self.heads[-1](h)
