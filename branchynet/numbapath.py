"""Early-exit inference compiled to native code with numba (optional).

The array-level fast path (``fastpath``) and ONNX Runtime pay a per-layer,
per-call price that a network as small as B-LeNet never earns back. This
path generates one numba function per layer shape from the link tree, with
every size and stride a literal (slab and weight offsets are arguments, so
ResNet's identical blocks share a function, and a run of identical blocks
is one loop over a table of their offsets), and one function, ``run``, that
takes each sample of a range through trunk segment, exit head, confidence
score and exit decision, exit after exit, going on to the next sample as
soon as one leaves (the main network skips the early heads). A batch is
split into one contiguous part per thread (the functions release the GIL),
each run sample by sample in the thread's own scratch slab by one native
call, so the working set of a sample (its activations) stays in the core's
caches whatever the batch size; batch size 1 is one native call.

Layout and kernels (float32 throughout, as Chainer computes):

* activations are planar per sample, (C, H, W), in one scratch slab; a value
  read by a convolution carries a zero margin as wide as that convolution's
  padding, so no padding is ever copied;
* a stride-1 convolution computes every output row over the full padded
  width (the extra columns are ignored), so each output plane is one long
  loop whose body sums all kernel taps of one input channel for a few output
  channels at once: one load of the output per input channel, not per tap,
  and a loop numba vectorises (AVX2/AVX-512). Test-mode BatchNormalization
  is folded into the weights and ReLU applied in the same function;
* max pooling (``cover_all`` windows clipped to the input) takes a ReLU in;
  LRN, average pooling, a residual block (``to_numba`` on the link), linear
  layers (vectorised dot products); dropout and an ``SL`` without a test-mode
  layer vanish (one with ``fnTest`` compiles that);
* the exit decision uses the same formula as ``confidence`` (entropy,
  maxprob or margin of the float64 softmax of the logits).

``NumbaBranchyNet(net).predict(x, thresholds)`` gives the labels and exits
of ``net.predict`` (up to float rounding in the last bits of the logits).
Numba is optional (``requirements/numba.txt``): without it, or for a layer
this path does not know, ``NumbaBranchyNet`` raises ``ImportError`` or
``NotCompilable`` naming what is missing, and ``compile_engine`` falls back
to ``fastpath.FastBranchyNet``. CPU (numpy) networks only. The weights are
snapshotted: compile again after training further.

The generated module lives in ``cache_dir()`` under a name that is a digest
of its source (every size and offset of the network is a literal there) and
of the numba version, and numba caches its machine code beside it: a network
of the same shape (any weights) compiles once, B-LeNet in seconds. The
module is written atomically; a module file with other content is written
again, and cached machine code that numba cannot read back is deleted and
compiled again, each with a ``RuntimeWarning``. numba reads that machine
code with ``pickle``, so the cache is used only when the folder and its
files belong to the current user and nobody else may write them
(``untrusted_cache``); otherwise the code is compiled in memory, with a
warning saying why.
"""
import math
import time

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import confidence
from branchynet.engine import InferenceEngine
from branchynet.fastpath import folded_conv_weights, fused_layers, pool_output_size
from branchynet.links import FL, SL, Net, pair
from branchynet.routing import NOT_FINITE
from branchynet.validation import InvalidValue, require_network

#: Measures decided natively (``confidence.MEASURES`` names).
MEASURE_CODES = {'entropy': 0, 'maxprob': 1, 'margin': 2}
#: Largest number of kernel taps times output channels summed in one loop
#: body of a convolution: each term's weight stays in a vector register, and
#: more spills them (B-LeNet's 5x5 convolutions: one output channel at a time
#: measured 25 % faster than two).
MAX_TERMS = 25
#: Output channel blocks tried, largest first.
OBS = (4, 2, 1)
#: Independent partial sums the taps of one output are split into (shorter
#: chains of dependent multiply-adds).
CHAINS = 4
#: A wide convolution output's plane stride is a multiple of this many floats
#: (one AVX-512 vector), so its loop has no scalar remainder.
VECTOR = 16


class NotCompilable(InvalidValue):
    """The network holds a layer (or a setting) this path cannot compile."""


def require_numba():
    """The numba module, or ImportError saying how to install it."""
    try:
        import numba
    except ImportError as e:
        raise ImportError('the numba inference path needs numba: pip install -r '
                          'requirements/numba.txt ({})'.format(e)) from None
    return numba


class Value:
    """One activation of one sample in the scratch slab.

    Element (c, y, x) lives at ``off + c * ps + (y + m) * ws + (x + m)``:
    ``m`` zero margin around every plane, row stride ``ws``, plane stride
    ``ps``. Wide values (stride-1 convolution outputs) have no margin and
    rows as long as their input's, junk past column ``w``.

    The layout contract between the op that writes a value and the ops that
    read it: code is generated only after every op is built, so a value's
    margin may still grow while ops are added (a later padded convolution
    reading it), and every writer and reader indexes it through ``at`` or
    its final ``margin``/``ws``/``ps``. Two kinds of op cannot follow a
    margin and ``pin`` the layout instead: a writer that writes packed rows
    (convolution, linear) and a reader that reads the value as one packed
    vector (linear, the exit decision). Once ``pinned``, the margin never
    changes: an op needing another layout reads a copy (``Builder.padded``,
    ``Builder.packed``).
    """

    def __init__(self, c, h, w, wide_of=None, pinned=False):
        self.c, self.h, self.w = c, h, w
        self.margin = 0
        self.wide_of = wide_of  # a wide value's rows are as long as this value's
        self.pinned = pinned  # layout final (see the class docstring)
        self.off = None
        self.consumers = 0

    @property
    def ws(self):
        return self.wide_of.ws if self.wide_of is not None else self.w + 2 * self.margin

    @property
    def ps(self):
        ps = (self.h + 2 * self.margin) * self.ws
        if self.wide_of is not None:  # whole vectors: no scalar remainder loop
            ps = -(-ps // VECTOR) * VECTOR
        return ps

    @property
    def size(self):
        # + one row and a little: a wide convolution reads that far past the last plane
        return self.c * self.ps + self.ws + 8 + VECTOR

    def at(self, c='c', y='y', x='x'):
        """Index expression of element (c, y, x) (names or ints)."""
        m = self.margin
        return '{} + ({}) * {} + (({}) + {}) * {} + ({}) + {}'.format(
            self.off, c, self.ps, y, m, self.ws, x, m)

    @property
    def compact(self):
        return self.margin == 0 and self.wide_of is None

    def shape(self):
        return self.c, self.h, self.w


class Op:
    """One generated function ``name(W, S)`` reading and writing the slab."""

    def __init__(self, kind, inputs, output, **params):
        self.kind, self.inputs, self.output, self.params = kind, inputs, output, params


class Builder:
    """Translates links into ``Op``s on ``Value``s and collects the weights.

    ``links(links, value)`` returns the output Value; the building blocks
    (``conv``, ``copy``, ...) are what a link's ``to_numba(builder, value)``
    uses.
    """

    def __init__(self):
        self.ops = []
        self.weights = []
        self.wsize = 0

    def weight(self, array):
        """Append a float32 array to the weight vector; returns its offset."""
        a = numpy.ascontiguousarray(numpy.asarray(array, numpy.float32)).ravel()
        off = self.wsize
        self.weights.append(a)
        self.wsize += a.size
        return off

    def emit(self, kind, inputs, output, **params):
        for v in inputs:
            v.consumers += 1
        self.ops.append(Op(kind, inputs, output, **params))
        return output

    # ------------------------------------------------------------ sequences
    def links(self, links, v):
        links = [link for link in links if not self._vanishes(link)]
        for link, bn, relu in fused_layers(links):
            if isinstance(link, L.Convolution2D):
                v = self.conv(link, v, bn=bn, relu=relu)
            elif isinstance(link, L.Linear):
                v = self.linear(link, v, relu)
            elif relu:  # max pooling
                v = self.function(link, v, relu=True)
            else:
                v = self.link(link, v)
        return v

    @staticmethod
    def _vanishes(link):
        """Identity at test time: dropout, and an ``SL`` without a test-mode layer."""
        return (isinstance(link, SL) and link.fnTest is None) or \
            (isinstance(link, FL) and link.fn is F.dropout)

    def link(self, link, v):
        if isinstance(link, L.Convolution2D):
            return self.conv(link, v)
        if isinstance(link, L.Linear):
            return self.linear(link, v)
        if isinstance(link, L.BatchNormalization):
            return self.batchnorm(link, v)
        if isinstance(link, FL):
            return self.function(link, v)
        if isinstance(link, SL):  # its test-mode layer (a Link or a plain function)
            fn = link.fnTest
            return self.links([fn if isinstance(fn, chainer.Link) else FL(fn)], v)
        if hasattr(link, 'to_numba'):
            return link.to_numba(self, v)
        if isinstance(link, Net):
            return self.links(list(link), v)
        raise NotCompilable('the numba path cannot compile {} (give the Chain a '
                            'to_numba(builder, value) method)'.format(type(link).__name__))

    # ---------------------------------------------------------------- layers
    def padded(self, v, pad):
        """``v`` readable with ``pad`` zeros around: ``v`` itself given a wider
        margin, or a copy of it with that margin when ``v``'s layout is pinned
        (written packed, or already read as a packed vector)."""
        if v.margin >= pad:
            return v
        if v.pinned:
            v = self.copy(v)
        v.margin = pad
        return v

    def packed(self, v):
        """``v`` as one packed vector (no margin, rows of ``w``), pinned so that
        no later reader can give it a margin: ``v`` itself or a compact copy."""
        if not v.compact:
            v = self.copy(v)
        v.pinned = True
        return v

    def copy(self, v, relu=False, scale=None, shift=None):
        """A compact copy of ``v`` (optionally through ReLU or a per-channel
        affine map: offsets into the weights)."""
        out = Value(*v.shape())
        return self.emit('copy', [v], out, relu=relu, scale=scale, shift=shift)

    def conv(self, link, v, bn=None, relu=False):
        """Convolution (+ folded BN, + ReLU); a conv link is refused if grouped or dilated."""
        if link.groups != 1 or pair(link.dilate) != (1, 1):
            raise NotCompilable('the numba path compiles ungrouped, undilated convolutions '
                                'only (got groups={}, dilate={})'.format(link.groups,
                                                                        link.dilate))
        w, b = folded_conv_weights(link, bn)
        o, c, kh, kw = w.shape
        if c != v.c:
            raise NotCompilable('convolution expects {} channels, gets {}'.format(c, v.c))
        sy, sx = pair(link.stride)
        ph, pw = pair(link.pad)
        if ph != pw:
            raise NotCompilable('the numba path needs equal padding on both axes (got {})'
                                .format(link.pad))
        v = self.padded(v, ph) if ph else v
        ho = (v.h + 2 * ph - kh) // sy + 1
        wo = (v.w + 2 * pw - kw) // sx + 1
        wide = sy == 1 and sx == 1
        out = Value(o, ho, wo, wide_of=v if wide else None, pinned=True)  # packed rows
        return self.emit('conv', [v], out, w=self.weight(w), b=self.weight(b), k=(kh, kw),
                         stride=(sy, sx), pad=ph, relu=relu)

    def linear(self, link, v, relu=False):
        v = self.packed(v)
        wt = link.W.array
        if wt.shape[1] != v.c * v.h * v.w:
            raise NotCompilable('linear layer expects {} inputs, gets {}'.format(
                wt.shape[1], v.c * v.h * v.w))
        b = link.b.array if link.b is not None else numpy.zeros(wt.shape[0], numpy.float32)
        out = Value(wt.shape[0], 1, 1, pinned=True)
        return self.emit('linear', [v], out, w=self.weight(wt), b=self.weight(b), relu=relu)

    def batchnorm(self, link, v):
        scale = link.gamma.array / numpy.sqrt(link.avg_var + link.eps)
        shift = link.beta.array - link.avg_mean * scale
        return self.copy(v, scale=self.weight(scale), shift=self.weight(shift))

    def function(self, fl, v, relu=False):
        fn = fl.fn
        if fn is F.relu:
            return self.copy(v, relu=True)
        if fn is F.max_pooling_2d or fn is F.average_pooling_2d:
            a = fl.bound_arguments()
            kind = 'max' if fn is F.max_pooling_2d else 'mean'
            if kind == 'mean' and a.get('pad_value', 0) not in (None, 0):
                raise NotCompilable('average pooling with pad_value {} is not compiled'
                                    .format(a['pad_value']))
            return self.pool(v, a['ksize'], a['stride'], a['pad'],
                             a.get('cover_all', False) if kind == 'max' else False, kind, relu)
        if fn is F.local_response_normalization:
            a = fl.bound_arguments()
            out = Value(*v.shape())
            return self.emit('lrn', [v], out, n=a['n'], k=a['k'], alpha=a['alpha'],
                             beta=a['beta'])
        raise NotCompilable('the numba path cannot compile the function {}'.format(
            getattr(fn, '__name__', fn)))

    def pool(self, v, ksize, stride, pad, cover_all, kind, relu=False):
        kh, kw = pair(ksize)
        sy, sx = pair(stride if stride is not None else ksize)
        ph, pw = pair(pad)
        out = Value(v.c, pool_output_size(v.h, kh, sy, ph, cover_all),
                    pool_output_size(v.w, kw, sx, pw, cover_all))
        return self.emit('pool', [v], out, k=(kh, kw), stride=(sy, sx), pad=(ph, pw),
                         mode=kind, relu=relu)

    def residual(self, h, shortcut, stride):
        """relu(h + shortcut subsampled by ``stride``, zero-padded in channels)."""
        out = Value(*h.shape())
        return self.emit('residual', [h, shortcut], out, stride=stride)


# ------------------------------------------------------------ code generation
def _indent(lines, n):
    return ['    ' * n + line for line in lines]


def _gen_conv(op):
    if op.params.get('kernel') == 'gemm':
        return _gen_conv_gemm(op)
    return _gen_conv_loop(op)


def _gen_conv_loop(op):
    """Output planes over ``ob`` output channels at a time; per input channel,
    one loop over the output whose body sums every kernel tap (literal
    offsets) for those channels. Wide: the output rows run over the input's
    padded width as one loop; otherwise (strided) row by row."""
    (x,), y, p = op.inputs, op.output, op.params
    kh, kw = p['k']
    sy, sx = p['stride']
    shift = x.margin - p['pad']  # where the padded window starts inside the margin
    taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]
    ob = next((b for b in OBS if y.c % b == 0 and b * len(taps) <= MAX_TERMS), 1)
    if y.wide_of is not None:
        rows, row_base, count = 'if True:', '0', y.ps
        x_row = '{} + c * {} + {}'.format(x.off, x.ps, shift * x.ws + shift)
        step = 1
    else:
        rows, row_base, count = 'for oy in range({}):'.format(y.h), 'oy * {}'.format(y.ws), y.w
        x_row = '{} + c * {} + (oy * {} + {}) * {} + {}'.format(
            x.off, x.ps, sy, shift, x.ws, shift)
        step = sx
    inner = []
    for b in range(ob):
        start = '{} + (o0 + {}) * {} + {}'.format(y.off, b, y.ps, row_base)
        inner += ['r{0} = S[{1}:{1} + {2}]'.format(b, start, count),
                  'bias{} = W[{} + o0 + {}]'.format(b, p['b'], b),
                  'for p in range({}):'.format(count),
                  '    r{0}[p] = bias{0}'.format(b)]
    chan = ['xr = S[{}:]'.format(x_row)]
    for b in range(ob):
        for t in range(len(taps)):
            chan.append('w{}_{} = W[{} + ((o0 + {}) * {} + c) * {} + {}]'.format(
                b, t, p['w'], b, x.c, len(taps), t))
    loop = ['v{} = xr[p{} + {}]'.format(t, '' if step == 1 else ' * {}'.format(step),
                                         ky * x.ws + kx) for t, (ky, kx) in enumerate(taps)]
    for b in range(ob):
        loop.append('r{0}[p] += {1}'.format(b, _split_sum(
            ['w{}_{} * v{}'.format(b, t, t) for t in range(len(taps))], CHAINS)))
    chan += ['for p in range({}):'.format(count)] + _indent(loop, 1)
    inner += ['for c in range({}):'.format(x.c)] + _indent(chan, 1)
    if p['relu']:
        for b in range(ob):
            inner += ['for p in range({}):'.format(count),
                      '    r{0}[p] = max(r{0}[p], numpy.float32(0))'.format(b)]
    return ['for o0 in range(0, {}, {}):'.format(y.c, ob)] + _indent([rows] + _indent(inner, 1), 1)


def gemm_size(op):
    """(K, N) of the product ``op``'s GEMM kernel computes: K = input channels
    times taps (rows of its im2col matrix), N = output plane stride (columns)."""
    if op.kind == 'linear':
        x = op.inputs[0]
        return x.c * x.h * x.w, 1
    kh, kw = op.params['k']
    return op.inputs[0].c * kh * kw, op.output.ps


def _gen_conv_gemm(op):
    """im2col into the slab's column area ``col`` (one row per input channel
    and tap; a wide output's rows are contiguous slices of the input, a strided
    one's are gathered), then one BLAS product ``(O, K) x (K, N)`` written over
    the packed output planes (plane stride N), then bias and ReLU."""
    (x,), y, p = op.inputs, op.output, op.params
    kh, kw = p['k']
    sy, sx = p['stride']
    shift = x.margin - p['pad']
    k, n = gemm_size(op)
    t = kh * kw
    if y.wide_of is not None:
        copy = ['src = {} + c * {} + ({} + ky) * {} + {} + kx'.format(
                    x.off, x.ps, shift, x.ws, shift),
                'for q in range({}):'.format(n),
                '    S[dst + q] = S[src + q]']
    else:
        copy = ['for oy in range({}):'.format(y.h),
                '    src = {} + c * {} + (oy * {} + {} + ky) * {} + {} + kx'.format(
                    x.off, x.ps, sy, shift, x.ws, shift),
                '    for ox in range({}):'.format(y.w),
                '        S[dst + oy * {} + ox] = S[src + ox * {}]'.format(y.w, sx)]
    lines = ['for c in range({}):'.format(x.c),
             '    for ky in range({}):'.format(kh),
             '        for kx in range({}):'.format(kw),
             '            dst = {} + (c * {} + ky * {} + kx) * {}'.format(p['col'], t, kw, n)]
    lines += _indent(copy, 3)
    return lines + _gemm_lines(p['w'], y.c, k, p['col'], n, y.off, p['b'], p['relu'])


def _gemm_lines(w, o, k, x, n, y, b, relu):
    """``S[y:]`` (o, n) = ``W[w:]`` (o, k) times ``S[x:]`` (k, n), through numpy.dot
    (numba calls the BLAS scipy links), + bias ``W[b + row]``, ReLU."""
    if n == 1:
        shapes = ['S[{0}:{0} + {1}]'.format(x, k), 'S[{0}:{0} + {1}]'.format(y, o)]
    else:
        shapes = ['S[{0}:{0} + {1}].reshape(({2}, {3}))'.format(x, k * n, k, n),
                  'S[{0}:{0} + {1}].reshape(({2}, {3}))'.format(y, o * n, o, n)]
    value = 'S[q] + bias'
    if relu:
        value = 'max({}, numpy.float32(0))'.format(value)
    return ['numpy.dot(W[{0}:{0} + {1}].reshape(({2}, {3})), {4}, {5})'.format(
                w, o * k, o, k, *shapes),
            'for o in range({}):'.format(o),
            '    bias = W[{} + o]'.format(b),
            '    for q in range({0} + o * {1}, {0} + o * {1} + {1}):'.format(y, n),
            '        S[q] = {}'.format(value)]


def _split_sum(terms, chains):
    """``terms`` summed as ``chains`` parenthesised partial sums (independent
    chains of multiply-adds: without reassociation one long sum is one chain
    of dependent FMAs, bound by their latency)."""
    n = max(1, min(chains, len(terms)))
    parts = [terms[i * len(terms) // n:(i + 1) * len(terms) // n] for i in range(n)]
    if n == 1:
        return ' + '.join(terms)
    return ' + '.join('({})'.format(' + '.join(part)) for part in parts)


def _gen_copy(op):
    (x,), y, p = op.inputs, op.output, op.params
    expr = 'S[{}]'.format(x.at())
    if p['scale'] is not None:
        expr = '{} * W[{} + c] + W[{} + c]'.format(expr, p['scale'], p['shift'])
    if p['relu']:
        expr = 'max({}, numpy.float32(0))'.format(expr)
    return ['for c in range({}):'.format(y.c),
            '    for y in range({}):'.format(y.h),
            '        for x in range({}):'.format(y.w),
            '            S[{}] = {}'.format(y.at(), expr)]


def _gen_pool(op):
    """Windows clipped to the input (``cover_all``, padding) in a general loop;
    the windows of a max pooling that lie wholly inside the input, most of
    them, as literal taps."""
    (x,), y, p = op.inputs, op.output, op.params
    kh, kw = p['k']
    sy, sx = p['stride']
    ph, pw = p['pad']
    mx = p['mode'] == 'max'

    def general(oys, oxs):
        lines = ['for oy in range({}, {}):'.format(*oys),
                 '    y0 = max(oy * {} - {}, 0)'.format(sy, ph),
                 '    y1 = min(oy * {} - {} + {}, {})'.format(sy, ph, kh, x.h),
                 '    for ox in range({}, {}):'.format(*oxs),
                 '        x0 = max(ox * {} - {}, 0)'.format(sx, pw),
                 '        x1 = min(ox * {} - {} + {}, {})'.format(sx, pw, kw, x.w),
                 '        acc = numpy.float32({})'.format('-numpy.inf' if mx else '0'),
                 '        for yy in range(y0, y1):',
                 '            for xx in range(x0, x1):',
                 '                acc = {}'.format('max(acc, S[{}])'.format(x.at('c', 'yy', 'xx'))
                                                   if mx else 'acc + S[{}]'.format(
                                                       x.at('c', 'yy', 'xx')))]
        if not mx:
            lines.append('        acc = acc / numpy.float32({})'.format(kh * kw))
        elif p['relu']:
            lines.append('        acc = max(acc, numpy.float32(0))')
        lines.append('        S[{}] = acc'.format(y.at('c', 'oy', 'ox')))
        return lines

    # windows wholly inside: rows 0..fy-1, columns 0..fx-1
    fy = min(y.h, max(0, (x.h - kh) // sy + 1))
    fx = min(y.w, max(0, (x.w - kw) // sx + 1))
    if not mx or ph or pw or (fy, fx) == (y.h, y.w):
        # (no window clipped: LLVM makes the general loop as fast, measured)
        return ['for c in range({}):'.format(y.c)] + _indent(general((0, y.h), (0, y.w)), 1)
    taps = ['S[{}]'.format(x.at('c', 'oy * {} + {}'.format(sy, ky), 'ox * {} + {}'.format(sx, kx)))
            for ky in range(kh) for kx in range(kw)]
    body = ['for oy in range({}):'.format(fy),
            '    for ox in range({}):'.format(fx),
            '        acc = numpy.float32(-numpy.inf)'] + [
        '        acc = max(acc, {})'.format(t) for t in taps]
    if p['relu']:
        body.append('        acc = max(acc, numpy.float32(0))')
    body.append('        S[{}] = acc'.format(y.at('c', 'oy', 'ox')))
    if fx < y.w:
        body += general((0, fy), (fx, y.w))
    if fy < y.h:
        body += general((fy, y.h), (0, y.w))
    return ['for c in range({}):'.format(y.c)] + _indent(body, 1)


def _gen_lrn(op):
    (x,), y, p = op.inputs, op.output, op.params
    half = p['n'] // 2
    if p['beta'] == 0.75:  # t ** -0.75 with square roots, which vectorise
        power = 'numpy.float32(1) / math.sqrt(t * math.sqrt(t))'
    else:
        power = 't ** numpy.float32({!r})'.format(-p['beta'])
    return ['for c in range({}):'.format(y.c),
            '    c0 = max(c - {}, 0)'.format(half),
            '    c1 = min(c + {}, {})'.format(half + 1, x.c),
            '    for y in range({}):'.format(y.h),
            '        for x in range({}):'.format(y.w),
            '            s = numpy.float32(0)',
            '            for cc in range(c0, c1):',
            '                a = S[{}]'.format(x.at('cc')),
            '                s += a * a',
            '            t = numpy.float32({!r}) + numpy.float32({!r}) * s'.format(
                float(p['k']), float(p['alpha'])),
            '            S[{}] = S[{}] * {}'.format(y.at(), x.at(), power)]


def _gen_residual(op):
    (h, sc), y, p = op.inputs, op.output, op.params
    s = p['stride']
    return ['for c in range({}):'.format(y.c),
            '    for y in range({}):'.format(y.h),
            '        for x in range({}):'.format(y.w),
            '            a = S[{}]'.format(h.at()),
            '            if c < {}:'.format(sc.c),
            '                a += S[{}]'.format(sc.at('c', 'y * {}'.format(s), 'x * {}'.format(s))),
            '            S[{}] = max(a, numpy.float32(0))'.format(y.at())]


def _gen_linear(op):
    if op.params.get('kernel') == 'gemm':
        (x,), y, p = op.inputs, op.output, op.params
        return _gemm_lines(p['w'], y.c, x.c * x.h * x.w, x.off, 1, y.off, p['b'], p['relu'])
    return _gen_linear_loop(op)


def _gen_linear_loop(op):
    """Dot products of ``ob`` weight rows with the input at once (one load of
    the input for ``ob`` multiply-adds)."""
    (x,), y, p = op.inputs, op.output, op.params
    k = x.c * x.h * x.w
    ob = next(b for b in (4, 2, 1) if y.c % b == 0)
    lines = ['xr = S[{0}:{0} + {1}]'.format(x.off, k),
             'for o in range(0, {}, {}):'.format(y.c, ob)]
    for b in range(ob):
        lines += ['    wr{0} = W[{1} + (o + {0}) * {2}:{1} + (o + {0}) * {2} + {2}]'.format(
                      b, p['w'], k),
                  '    acc{} = numpy.float32(0)'.format(b)]
    lines += ['    for i in range({}):'.format(k),
              '        xi = xr[i]'] + [
        '        acc{0} += wr{0}[i] * xi'.format(b) for b in range(ob)]
    for b in range(ob):
        lines.append('    acc{0} += W[{1} + o + {0}]'.format(b, p['b']))
        if p['relu']:
            lines.append('    acc{0} = max(acc{0}, numpy.float32(0))'.format(b))
        lines.append('    S[{} + o + {}] = acc{}'.format(y.off, b, b))
    return lines


def _symbolic(op):
    """``op``'s function body with its slab and weight offsets as arguments
    (so layers of the same shape share one function): ``(lines, [(name, value)])``."""
    args = []
    values = list(op.inputs) + [op.output]
    saved = [v.off for v in values]
    for i, v in enumerate(op.inputs):
        args.append(('X{}'.format(i), v.off))
        v.off = 'X{}'.format(i)
    args.append(('Y', op.output.off))
    op.output.off = 'Y'
    params = dict(op.params)
    for key in ('w', 'b', 'scale', 'shift', 'col'):
        if params.get(key) is not None:
            name = 'P' + key.upper()
            args.append((name, params[key]))
            params[key] = name
    try:
        return GENERATORS[op.kind](Op(op.kind, op.inputs, op.output, **params)), args
    finally:
        for v, off in zip(values, saved):
            v.off = off


GENERATORS = {'conv': _gen_conv, 'copy': _gen_copy, 'pool': _gen_pool, 'lrn': _gen_lrn,
              'residual': _gen_residual, 'linear': _gen_linear}
#: fastmath flags per kind: reassociation only where it is a plain dot product
#: (it would let numba vectorise the convolution's tap sum the wrong way)
_CONTRACT = {'contract', 'nnan', 'ninf', 'nsz', 'arcp'}
FASTMATH = {'linear': True}


def _function_lines(kind, name, body, args, cache=True):
    """A layer function's source: decorator, signature, body."""
    fm = FASTMATH.get(kind, _CONTRACT)
    return ['@numba.njit(fastmath={}, boundscheck=False, nogil=True, cache={})'.format(
                fm if isinstance(fm, bool) else '{' + ', '.join(map(repr, sorted(fm))) + '}',
                cache),
            'def {}(W, S, {}):'.format(name, ', '.join(n for n, _ in args))] + \
        _indent(body, 1)


#: Kernel settings of ``NumbaBranchyNet(kernels=...)``: measured choice, or forced.
KERNELS = ('auto', 'loop', 'gemm')
#: Layer kinds with both kernels (the others have one).
CHOOSABLE = ('conv', 'linear')


def _layer_key(op):
    """What a layer's speed depends on: its kind and generated loop code (every
    size a literal, offsets symbolic), as a string."""
    params = dict(op.params, kernel='loop')
    body, _ = _symbolic(Op(op.kind, op.inputs, op.output, **params))
    return op.kind + '\n' + '\n'.join(body)


def time_kernels(op, weights, kernels, rounds=5, seconds=2e-3):
    """Microseconds per call of ``op`` with each of ``kernels`` (None: the
    kind's only one) on a private slab, each compiled alone (in memory), the
    best of ``rounds`` interleaved rounds of about ``seconds`` each (the BLAS on
    one thread, as the engine runs it)."""
    values = list(op.inputs) + [op.output]
    saved = [v.off for v in values]
    end = 0
    for v in values:
        v.off, end = end, end + v.size
    k, n = gemm_size(op) if op.kind == 'conv' else (0, 0)
    lines, calls = ['import math', 'import numba', 'import numpy'], []
    try:
        for i, kernel in enumerate(kernels):
            params = dict(op.params, kernel=kernel, col=end)
            body, args = _symbolic(Op(op.kind, op.inputs, op.output, **params))
            lines += [''] + _function_lines(op.kind, 'k{}'.format(i), body, args, cache=False)
            calls.append([v for _, v in args])
    finally:
        for v, off in zip(values, saved):
            v.off = off
    module = {}
    exec(compile('\n'.join(lines), '<kernel timing>', 'exec'), module)
    S = numpy.random.RandomState(0).rand(end + k * n + VECTOR).astype(numpy.float32)
    fns = [(module['k{}'.format(i)], calls[i]) for i in range(len(kernels))]
    best = [math.inf] * len(fns)
    with blas_limit(1):
        reps = []
        for fn, args in fns:  # compile, then a first time for the repetitions
            fn(weights, S, *args)
            start = time.perf_counter()
            fn(weights, S, *args)
            reps.append(max(1, int(seconds / max(time.perf_counter() - start, 1e-7))))
        for _ in range(rounds):
            for j, ((fn, args), r) in enumerate(zip(fns, reps)):
                start = time.perf_counter()
                for _ in range(r):
                    fn(weights, S, *args)
                best[j] = min(best[j], (time.perf_counter() - start) / r)
    return {kernel: round(t * 1e6, 3) for kernel, t in zip(kernels, best)}


_CONTROLLER = []


def blas_limit(threads):
    """A context running the BLAS (scipy's, which numba calls) on ``threads``:
    the engine's own threads already split a batch, and a multithreaded BLAS
    called from two threads at once waits on itself (measured: several times
    slower); without threadpoolctl, the BLAS as it is."""
    import contextlib
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
            _CONTROLLER.append(ThreadpoolController())
        except ImportError:
            _CONTROLLER.append(None)
    if _CONTROLLER[0] is None:
        return contextlib.nullcontext()
    return _CONTROLLER[0].limit(limits=threads, user_api='blas')


def processor():
    """(model name, vector extensions) of this machine's processor, from
    /proc/cpuinfo (the platform's name and no extensions where there is none)."""
    import platform
    model, flags = None, []
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and model is None:
                    model = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = value.split()
    except OSError:
        pass
    vector = [f for f in flags if f.startswith(('sse', 'ssse', 'avx', 'fma', 'amx', 'neon',
                                                'asimd', 'sve'))]
    return model or platform.processor() or 'unknown', vector


class _ChoiceCache:
    """Measured kernel times per layer shape and processor, in
    ``kernel_choices.json`` in ``cache_dir()`` (JSON: read without pickle);
    used only where ``untrusted_cache`` accepts the folder."""

    NAME = 'kernel_choices'

    def __init__(self):
        import json
        import os
        self.folder = cache_dir()
        self.path = os.path.join(self.folder, self.NAME + '.json')
        self.entries, self.changed = {}, False
        self.salt = '{}\n{}\n'.format(require_numba().__version__, processor())
        with _suppress_os_error():
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
        self.usable = untrusted_cache(self.folder, self.NAME) is None
        if self.usable:
            try:
                with open(self.path) as f:
                    self.entries = json.load(f)
            except (OSError, ValueError):
                self.entries = {}
            if not isinstance(self.entries, dict):
                self.entries = {}

    def _digest(self, key):
        import hashlib
        return hashlib.sha256((self.salt + key).encode()).hexdigest()[:32]

    def get(self, key):
        times = self.entries.get(self._digest(key))
        if isinstance(times, dict) and all(isinstance(times.get(k), (int, float))
                                           for k in KERNELS[1:]):
            return times
        return None

    def put(self, key, times):
        self.entries[self._digest(key)] = times
        self.changed = True

    def save(self):
        import json
        if not (self.usable and self.changed):
            return
        from branchynet import fileio
        with _suppress_os_error():
            with fileio.atomic_write(self.path) as f:
                f.write(json.dumps(self.entries, sort_keys=True).encode())


#: Longest run of calls repeated with other offsets that becomes one loop.
MAX_PERIOD = 8


def _call_lines(calls, tables):
    """Source lines calling ``calls`` (``(function, [offsets])``) in order.
    A run of at least two repeats of the same functions (ResNet's identical
    blocks) becomes one loop over a table of their offsets (appended to
    ``tables``; global ``T<i>`` in the module): LLVM then inlines one copy of
    the block instead of one per block, which keeps compile time linear in
    the number of distinct layers, not in the depth."""
    lines, i = [], 0
    while i < len(calls):
        best = (1, 1)  # (repeats, period)
        for period in range(1, min(MAX_PERIOD, (len(calls) - i) // 2) + 1):
            names = [f for f, _ in calls[i:i + period]]
            reps = 1
            while [f for f, _ in calls[i + reps * period:i + (reps + 1) * period]] == names:
                reps += 1
            if reps > 1 and reps * period > best[0] * best[1]:
                best = (reps, period)
        reps, period = best
        if reps == 1:
            f, args = calls[i]
            lines.append('{}(W, S, {})'.format(f, ', '.join(map(str, args))))
            i += 1
            continue
        block = calls[i:i + reps * period]
        table = numpy.array([sum((args for _, args in block[r * period:(r + 1) * period]), [])
                             for r in range(reps)], numpy.int64)
        name = 'T{}'.format(len(tables))
        tables.append(table)
        lines.append('for k in range({}):'.format(reps))
        col = 0
        for f, args in calls[i:i + period]:
            lines.append('    {}(W, S, {})'.format(f, ', '.join(
                '{}[k, {}]'.format(name, col + j) for j in range(len(args)))))
            col += len(args)
        i += reps * period
    return lines


def _allocate(ops, inputs, keep):
    """Offsets in the slab for every Value: buffers are reused once their last
    reader has run, but only for values of the same geometry (so zero margins
    stay zero). ``keep`` values are never reused. Returns the slab size."""
    free, size = {}, [0]
    remaining = {}

    def geometry(v):
        return (v.c, v.h, v.w, v.margin, v.ws, v.ps)

    def place(v):
        pool = free.get(geometry(v))
        if pool:
            v.off = pool.pop()
        else:
            v.off = size[0]
            size[0] += v.size
        remaining[id(v)] = v.consumers

    for v in inputs:
        place(v)
    for op in ops:
        place(op.output)
        for v in op.inputs:
            remaining[id(v)] -= 1
            if remaining[id(v)] == 0 and not any(v is k for k in keep):
                free.setdefault(geometry(v), []).append(v.off)
    return size[0]


class Program:
    """The compiled code of one network: ``run(X, W, S, limits, code,
    main_only, labels, exits, lo, hi)`` writes the label and exit of rows
    ``lo:hi`` of ``X`` (flat float32 samples) into ``labels`` and ``exits``
    (int32); ``W`` the weight vector, ``S`` one scratch slab of ``slab``
    float32 zeros, ``limits`` the float64 exit limits of the measure ``code``
    (``MEASURE_CODES``); ``main_only`` runs the main network (no early head).
    One entry point: numba compiles every layer function into each function
    that calls it, so each further entry point would cost as much again.

    ``load=False`` only generates the source (``source``; ``functions``: the
    distinct layer functions, name -> (kind, body lines)), without numba.
    """

    def __init__(self, net, load=True, kernels='auto'):
        if kernels not in KERNELS:
            raise InvalidValue('kernels must be one of {}, got {!r}'.format(
                ', '.join(map(repr, KERNELS)), kernels))
        self.numba = require_numba() if load else None
        if net.xp is not numpy:
            raise NotCompilable('the numba path runs on the CPU: call net.to_cpu() first')
        if net.input_shape is None or len(net.input_shape) != 3:
            raise NotCompilable('the numba path needs an image network with input_shape '
                                '(C, H, W), got {}'.format(net.input_shape))
        b = Builder()
        x = Value(*net.input_shape)
        segments, heads, h = [], [], x
        for n in range(net.numexits()):
            start = len(b.ops)
            h = b.links(net.trunk[slice(*net.segment_bounds(n))], h)
            segments.append((start, len(b.ops), h))
            start = len(b.ops)
            z = b.links(net.head_links(n), h)
            if (z.h, z.w) != (1, 1):
                raise NotCompilable('exit {} gives logits of shape {}: the numba path needs '
                                    'one vector of class scores per sample (end the head '
                                    'with a Linear layer)'.format(n + 1, z.shape()))
            z = b.packed(z)  # the decision reads the logits as one vector
            heads.append((start, len(b.ops), z))
        self.nclasses = heads[0][2].c
        self.weights = numpy.concatenate(b.weights) if b.weights else numpy.zeros(1, numpy.float32)
        self._choose(b.ops, kernels if load or kernels != 'auto' else 'loop')
        # the main program skips the early heads: their outputs are never read there,
        # so one allocation serves both programs
        self.slab = _allocate(b.ops, [x], keep=[s[2] for s in segments] + [z for *_, z in heads])
        # the GEMM kernels' im2col matrix: one area after the values, shared (transient)
        col = max([k * n for k, n in (gemm_size(op) for op in b.ops
                                      if op.params.get('kernel') == 'gemm' and op.kind == 'conv')]
                  or [0])
        for op in b.ops:
            if op.params.get('kernel') == 'gemm':
                op.params['col'] = self.slab
        self.slab += col
        self.x, self.segments, self.heads, self.ops = x, segments, heads, b.ops
        self.functions = {}
        self.source = self._source()
        if load:
            start = time.perf_counter()
            self._load()
            #: seconds to import the module and compile (or load from the cache) its code
            self.compile_seconds = time.perf_counter() - start

    def _choose(self, ops, kernels):
        """Set each convolution's and linear layer's ``kernel`` param: the one
        ``kernels`` forces, or ('auto') the faster of both as measured on this
        machine for that layer's shape (kept in ``kernel_choices.json`` in the
        cache folder, so a shape is measured once per processor)."""
        measured = {}
        choices = _ChoiceCache() if kernels == 'auto' else None
        for op in ops:
            if op.kind not in CHOOSABLE:
                continue
            if kernels != 'auto':
                op.params['kernel'] = kernels
                continue
            key = _layer_key(op)
            if key not in measured:
                measured[key] = choices.get(key)
                if measured[key] is None:
                    measured[key] = time_kernels(op, self.weights, KERNELS[1:])
                    choices.put(key, measured[key])
            times = measured[key]
            op.params['kernel'] = min(KERNELS[1:], key=lambda k: (times[k], k != 'loop'))
            op.params['measured'] = times
        if choices is not None:
            choices.save()

    @property
    def uses_gemm(self):
        """Whether some layer runs the BLAS product (BLAS threads matter then)."""
        return any(op.params.get('kernel') == 'gemm' for op in self.ops)

    def explain(self, measure=False):
        """One row per layer: ``{'layer', 'kind', 'input', 'output', 'kernel',
        'us': {kernel: µs per call}}``; the times are those measured to choose
        the kernel ('auto'), and with ``measure=True`` every layer (each kind,
        each kernel of a convolution or linear layer) is timed now."""
        rows, timed = [], {}
        for i, op in enumerate(self.ops):
            times = dict(op.params.get('measured') or {})
            if measure:
                key = _layer_key(op)
                if key not in timed:
                    timed[key] = time_kernels(op, self.weights, KERNELS[1:]
                                              if op.kind in CHOOSABLE else (None,))
                times = {k or op.kind: v for k, v in timed[key].items()}
            rows.append({'layer': i, 'kind': op.kind, 'kernel': op.params.get('kernel'),
                         'input': ' + '.join('x'.join(map(str, v.shape())) for v in op.inputs),
                         'output': 'x'.join(map(str, op.output.shape())), 'us': times})
        return rows

    def _source(self):
        """Python source of the module: one function per distinct layer (ResNet's
        identical blocks share one), the score, and ``run``, every size a literal."""
        import inspect
        score = inspect.getsource(_score).replace('def _score(', 'def score(', 1)
        finite = inspect.getsource(_finite).replace('def _finite(', 'def finite(', 1)
        out = ['import math', 'import numba', 'import numpy', '', '',
               '@numba.njit(boundscheck=False, nogil=True, cache=True)'] + score.splitlines()
        out += ['', '', '@numba.njit(boundscheck=False, nogil=True, cache=True)'] + \
            finite.splitlines()
        calls, cache = [], {}
        for i, op in enumerate(self.ops):
            body, args = _symbolic(op)
            key = (op.kind, tuple(body))
            if key not in cache:  # the same layer shape (ResNet's blocks) shares one function
                cache[key] = 'op{}'.format(i)
                out += [''] + _function_lines(op.kind, 'op{}'.format(i), body, args) + ['']
                self.functions[cache[key]] = key
            calls.append((cache[key], [v for _, v in args]))
        tables = []

        def run(start, end):
            return _call_lines(calls[start:end], tables)

        x = self.x
        sample = ['xin = X[i]',
                  'for c in range({}):'.format(x.c),
                  '    for y in range({}):'.format(x.h),
                  '        for x in range({}):'.format(x.w),
                  '            S[{}] = xin[(c * {} + y) * {} + x]'.format(x.at(), x.h, x.w)]
        last = len(self.segments) - 1
        for n, (seg, head) in enumerate(zip(self.segments, self.heads)):
            sample += run(seg[0], seg[1])
            z = head[2]
            logits = 'S[{}:{}]'.format(z.off, z.off + z.c)
            take = ['labels[i] = numpy.argmax({})'.format(logits), 'exits[i] = {}'.format(n)]
            # logits that are not finite: marked for routing.check_finite to name
            refuse = ['if not finite({}):'.format(logits),
                      '    labels[i] = {0}'.format(NOT_FINITE),
                      '    exits[i] = {0}'.format(NOT_FINITE),
                      '    continue']
            if n == last:
                sample += run(head[0], head[1]) + refuse + take
            else:  # the main network skips the early heads
                sample += ['if not main_only:'] + _indent(
                    run(head[0], head[1]) + refuse +
                    ['if score({}, code) < limits[{}]:'.format(logits, n)] +
                    _indent(take + ['continue'], 1), 1)
        out += ['', ''] + ['T{} = numpy.array({!r}, numpy.int64)'.format(i, t.tolist())
                           for i, t in enumerate(tables)]
        out += ['', '', '@numba.njit(boundscheck=False, nogil=True, cache=True)',
                'def run(X, W, S, limits, code, main_only, labels, exits, lo, hi):',
                '    for i in range(lo, hi):'] + _indent(sample, 2) + ['']
        return '\n'.join(out)

    @property
    def module_name(self):
        """The generated module's name: a digest of its source (every size and
        offset of the network is a literal there) and of the numba version."""
        import hashlib
        key = '{}\n{}'.format((self.numba or require_numba()).__version__, self.source)
        return 'branchynet_numba_' + hashlib.sha256(key.encode()).hexdigest()[:24]

    def _load(self):
        """Import the generated module from the cache folder and compile its
        functions (numba keeps their machine code beside it, so a network of
        the same shape compiles once). A cache entry that cannot be read back
        is deleted with a warning and the code compiled again. A cache folder
        that ``untrusted_cache`` refuses is not used at all: the code is
        compiled in memory, with a warning saying why."""
        import os
        import warnings
        folder = cache_dir()
        with _suppress_os_error():  # a folder that cannot be made is refused below
            os.makedirs(folder, mode=0o700, exist_ok=True)
        reason = untrusted_cache(folder, self.module_name)
        if reason is not None:
            warnings.warn('numba cache not used, compiling without it (slower to start): '
                          '{}'.format(reason), RuntimeWarning)
            self._import_in_memory()
            self._warm_up()
            return
        path = os.path.join(folder, self.module_name + '.py')
        _write_source(path, self.source)
        stale = _cached_files(folder, self.module_name)
        try:
            self._import(path)
            self._warm_up()
        except Exception as e:
            if not stale:
                raise
            warnings.warn('numba cache of {} could not be read ({}: {}); deleted and '
                          'compiled again'.format(path, type(e).__name__, e), RuntimeWarning)
            for f in stale:
                with _suppress_os_error():
                    os.unlink(f)
            self._import(path, fresh=True)
            self._warm_up()

    def _import(self, path, fresh=False):
        import importlib.util
        import sys
        name = self.module_name
        module = None if fresh else sys.modules.get(name)
        if module is None:  # registered first: numba's cache imports it by name
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        self.module = module
        self.run = module.run

    def _import_in_memory(self):
        """The generated module executed from memory, its functions compiled
        without numba's on-disk cache (nothing is read from or written to disk)."""
        import types
        module = types.ModuleType(self.module_name + '_uncached')
        exec(compile(self.source.replace('cache=True', 'cache=False'),
                     '<{}>'.format(module.__name__), 'exec'), module.__dict__)
        self.module = module
        self.run = module.run

    def _warm_up(self):
        """Compile (or load) every entry point for the argument types the
        engine passes: numba compiles on the first call."""
        n = int(numpy.prod(self.x.shape()))
        X = numpy.zeros((2, n), numpy.float32)
        S = numpy.zeros((1, self.slab), numpy.float32)[0]
        limits = numpy.zeros(len(self.heads), numpy.float64)
        labels, exits = numpy.zeros(2, numpy.int32), numpy.zeros(2, numpy.int32)
        self.run(X, self.weights, S, limits, 0, False, labels, exits, 0, 2)


def _suppress_os_error():
    import contextlib
    return contextlib.suppress(OSError)


def _write_source(path, source):
    """``path`` holding ``source``: left alone when it does, else written
    atomically (a temporary file renamed over it; a file with other content,
    e.g. cut short, is replaced with a warning). Rewriting it changes its
    modification time, which makes numba discard its cached machine code."""
    import warnings
    from branchynet import fileio
    try:
        with open(path, 'rb') as f:
            current = f.read()
    except FileNotFoundError:
        current = None
    except OSError:
        current = b''
    if current == source.encode():
        return
    if current is not None:
        warnings.warn('numba cache: {} did not hold the generated source; written '
                      'again'.format(path), RuntimeWarning)
    with fileio.atomic_write(path) as f:
        f.write(source.encode())


def _cached_files(folder, module_name):
    """numba's cache files (index ``.nbi``, data ``.nbc``) of the generated
    module: numba keeps them in ``__pycache__`` beside the source, or under
    ``$NUMBA_CACHE_DIR`` when that is set."""
    import glob
    import os
    found = []
    roots = [os.path.join(folder, '__pycache__')]
    if os.environ.get('NUMBA_CACHE_DIR'):
        roots.append(os.environ['NUMBA_CACHE_DIR'])
    for root in roots:
        for ext in ('nbi', 'nbc'):
            found += glob.glob(os.path.join(glob.escape(root), '**',
                                            glob.escape(module_name) + '.*.' + ext),
                               recursive=True)
    return found


def _current_uid():
    import os
    return os.getuid()


def untrusted_cache(folder, module_name):
    """Why the numba cache in ``folder`` must not be used, or None when it may.

    numba reads its cached machine code with ``pickle``, and the generated
    module is imported from the folder: whoever can write there can run code
    in this process. So the cache is trusted only when the folder, its
    ``__pycache__`` (and ``$NUMBA_CACHE_DIR`` when set) and this module's
    files in them are not symbolic links, belong to the current user and are
    writable by nobody else (no group or other write bit).
    """
    import os
    import stat
    if not hasattr(os, 'getuid'):  # no owners to check (Windows)
        return None
    if not os.path.isdir(folder):
        return '{} is not a folder that can be created'.format(folder)
    paths = [folder, os.path.join(folder, '__pycache__'),
             os.path.join(folder, module_name + '.py')]
    if os.environ.get('NUMBA_CACHE_DIR'):
        paths.append(os.environ['NUMBA_CACHE_DIR'])
    paths += _cached_files(folder, module_name)
    uid = _current_uid()
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            return 'cannot check {} ({})'.format(path, e.strerror)
        if stat.S_ISLNK(st.st_mode):
            return '{} is a symbolic link'.format(path)
        if st.st_uid != uid:
            return '{} belongs to user id {}, not to the current user ({})'.format(
                path, st.st_uid, uid)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return '{} is writable by other users (mode {:o}); make it private with ' \
                'chmod go-w'.format(path, stat.S_IMODE(st.st_mode))
    return None


def cache_dir():
    """Where generated modules and numba's cache of them live:
    ``$BRANCHYNET_NUMBA_CACHE``, else ``~/.cache/branchynet/numba``."""
    import os
    return os.environ.get('BRANCHYNET_NUMBA_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'branchynet', 'numba')


def _finite(z):
    """Whether every logit of one row is finite."""
    for v in z:
        if not math.isfinite(v):
            return False
    return True


def _score(z, code):
    """Uncertainty score of one row of logits, in float64 as ``confidence``
    computes it: entropy (code 0), 1 - max p (1), 1 - (p1 - p2) (2)."""
    m = -numpy.inf
    for v in z:
        m = max(m, numpy.float64(v))
    s = 0.0
    ed = 0.0
    p1 = 0.0
    p2 = 0.0
    for v in z:
        d = numpy.float64(v) - m
        e = math.exp(d)
        s += e
        ed += e * d
        if e > p1:
            p2 = p1
            p1 = e
        elif e > p2:
            p2 = e
    if code == 0:
        return math.log(s) - ed / s
    if code == 1:
        return 1.0 - p1 / s
    return 1.0 - (p1 / s - p2 / s)


class NumbaBranchyNet(InferenceEngine):
    """Early-exit inference of a trained BranchyNet, compiled with numba.

    Same answers as ``net.predict``/``net.predict_main``. A batch is split
    into ``threads`` contiguous parts run at once (the generated functions
    release the GIL); default: one per core. ``kernels``: each convolution and
    linear layer runs the generated loop ('loop'), an im2col and BLAS product
    ('gemm'), or ('auto') whichever was measured faster for its shape on this
    machine at compile time (``explain()`` shows the choice and times). The
    exit decision is native for the measures of ``MEASURE_CODES``; any other
    ``net.confidence`` routes through the fast path's per-exit steps.
    """

    stage_timing = False  # segment, head and decision are one native call
    #: chunks a batch is cut into per thread (``_split``)
    CHUNKS_PER_THREAD = 4

    def __init__(self, net, threads=None, kernels='auto'):
        import os
        from branchynet.fastpath import FastBranchyNet
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise InvalidValue('threads must be a positive integer or None (one per core), '
                               'got {!r}'.format(threads))
        self.net = require_network(net)
        self.xp = numpy
        start = time.perf_counter()
        self.program = Program(net, kernels=kernels)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') \
            else os.cpu_count()
        self.threads = cores if threads is None else threads
        self.input_shape = net.input_shape
        self._fast = FastBranchyNet(net)
        self.steps = self._fast.steps
        self._scratch = numpy.zeros((self.threads, self.program.slab), numpy.float32)
        self._pool = None
        self._last_decision = None
        self._main_limits = numpy.zeros(self.numexits(), numpy.float64)  # not read
        # starts the worker threads now, not inside the first timed batch
        self.main_route(numpy.zeros((self.threads,) + tuple(self.input_shape), numpy.float32))
        #: seconds to generate and compile (or load from numba's cache) the code
        self.compile_seconds = time.perf_counter() - start

    @staticmethod
    def _rows(x):
        x = numpy.ascontiguousarray(x, dtype=numpy.float32)
        return x.reshape(len(x), -1)

    def _split(self, fn, n, *args):
        """``fn(*args, S, lo, hi)`` over ``range(n)`` on ``threads`` threads at
        once, each taking the next chunk of samples as it finishes one (about
        ``CHUNKS_PER_THREAD`` each): a thread that starts late (a wake-up) or
        runs slower (a core shared with another process) takes fewer."""
        parts = max(1, min(self.threads, n))
        if parts == 1:
            fn(*args, self._scratch[0], 0, n)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(self.threads - 1)
        import itertools
        chunk = max(1, n // (parts * self.CHUNKS_PER_THREAD))
        counter = itertools.count(0, chunk)  # next() is atomic under the GIL

        def work(S):
            for lo in counter:
                if lo >= n:
                    return
                fn(*args, S, lo, min(lo + chunk, n))

        futures = [self._pool.submit(work, self._scratch[t]) for t in range(1, parts)]
        work(self._scratch[0])
        for f in futures:
            f.result()

    def _decision(self, thresholds):
        """(measure code, float64 limits) for ``thresholds``, kept for the
        last settings seen (this sits on the batch-1 hot path); code None
        for a measure decided in Python."""
        key = (self.net.confidence, tuple(thresholds))
        if self._last_decision is None or self._last_decision[0] != key:
            measure = confidence.get_measure(self.net.confidence)
            code = MEASURE_CODES.get(measure.name)
            if confidence.MEASURES.get(measure.name) is not measure:
                code = None
            limits = numpy.array([measure.limit(t) for t in thresholds] + [0.], numpy.float64)
            self._last_decision = (key, code, limits)
        return self._last_decision[1:]

    def _run(self, x, limits, code, main_only):
        rows = self._rows(x)
        n, p = len(rows), self.program
        labels = numpy.empty(n, numpy.int32)
        exits = numpy.empty(n, numpy.int32)
        if p.uses_gemm:  # one BLAS thread per engine thread
            with blas_limit(1):
                self._call(rows, limits, code, main_only, labels, exits)
        else:
            self._call(rows, limits, code, main_only, labels, exits)
        return labels, exits

    def _call(self, rows, limits, code, main_only, labels, exits):
        n, p = len(rows), self.program
        if n == 1:  # one native call, no hand-off to a thread
            p.run(rows, p.weights, self._scratch[0], limits, code, main_only, labels, exits,
                  0, 1)
        else:
            self._split(lambda S, lo, hi: p.run(rows, p.weights, S, limits, code, main_only,
                                                labels, exits, lo, hi), n)

    def explain(self, measure=False):
        """The layers' kernels and measured times as text, one line per layer
        (``Program.explain`` gives the rows): layer, kind, input and output
        shapes (C x H x W), kernel chosen, µs per call of each kernel; with
        ``measure=True`` every layer is timed now (a profile by layer), and
        a last line sums the times by layer kind."""
        rows = self.program.explain(measure)
        lines = ['{:>5s} {:<8s} {:<22s} {:<12s} {:<6s} {}'.format(
            'layer', 'kind', 'input', 'output', 'kernel', 'µs per call')]
        total = {}
        for r in rows:
            times = ', '.join('{} {:.1f}'.format(k, v) for k, v in sorted(r['us'].items()))
            lines.append('{:>5d} {:<8s} {:<22s} {:<12s} {:<6s} {}'.format(
                r['layer'], r['kind'], r['input'], r['output'], r['kernel'] or '-', times))
            chosen = r['us'].get(r['kernel'] or r['kind'])
            if chosen is not None:
                total[r['kind']] = total.get(r['kind'], 0.) + chosen
        if total:
            lines.append('sum of the chosen kernels\' µs by kind (every layer once, early '
                         'heads included): ' + ', '.join('{} {:.0f}'.format(k, v) for k, v in
                                                           sorted(total.items())))
        return '\n'.join(lines)

    def route(self, x, thresholds, timer=None):
        code, limits = self._decision(thresholds)
        if code is None:
            return self._fast.route(x, thresholds)
        return self._run(x, limits, code, False)

    def main_route(self, x, timer=None):
        return self._run(x, self._main_limits, 0, True)

    def main_logits(self, x, timer):
        """The baseline network's logits (through the fast path: the native
        code returns labels only)."""
        return self._fast.main_logits(x, timer)


def compile_engine(net, warn=print):
    """The fastest engine available for ``net``: ``NumbaBranchyNet`` when numba
    is installed and can compile every layer, else ``FastBranchyNet`` (the
    reason passed to ``warn``)."""
    try:
        return NumbaBranchyNet(net)
    except (ImportError, NotCompilable) as e:
        from branchynet.fastpath import FastBranchyNet
        if warn is not None:
            warn('numba path unavailable, using the fast path: {}'.format(e))
        return FastBranchyNet(net)
