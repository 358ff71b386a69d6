"""Python source for numba, one function per op kind, every size a literal.

A stride-1 convolution computes each output plane as one long loop whose body
sums all kernel taps of one input channel for a few output channels at once
(one load of the output per input channel, not per tap, a loop numba
vectorises); its GEMM kernel is an im2col and one BLAS product. Max pooling
(``cover_all`` windows clipped to the input) takes a ReLU in; LRN, average
pooling, a residual block and linear layers (vectorised dot products); the
register-tiled convolution kernel is in ``tile``. The
exit decision (``module_header``) uses the same formula as ``confidence``
(entropy, maxprob or margin of the float64 softmax of the logits).
"""
import math

import numpy

from branchynet.engines.numba.layout import MAX_TERMS, OBS, CHAINS, Value
from branchynet.engines.numba.builder import Op
from branchynet.engines.numba.tile import gen_conv_tile


def indent(lines, n):
    return ['    ' * n + line for line in lines]


def _gen_conv(op):
    if op.params.get('kernel') == 'gemm':
        return _gen_conv_gemm(op)
    if op.params.get('kernel') == 'tile':
        return gen_conv_tile(op)
    return _gen_conv_loop(op)


def narrowed_input(op):
    """The copy a ``narrow`` convolution reads (``Program._narrow``): its
    input with a margin as wide as its padding, at ``col``, an area of the
    slab of its own (only the copy writes there, so the margin stays zero)."""
    (x,), p = op.inputs, op.params
    n = Value(x.c, x.h, x.w)
    n.margin, n.off = p['pad'], p.get('col')
    return n


def _narrow_lines(x, n):
    """Copy ``x`` into ``n``, row by row."""
    return ['for c in range({}):'.format(x.c),
            '    for y in range({}):'.format(x.h),
            '        xs = S[{0}:{0} + {1}]'.format(x.at('c', 'y', 0), x.w),
            '        ns = S[{0}:{0} + {1}]'.format(n.at('c', 'y', 0), x.w),
            '        for x in range({}):'.format(x.w),
            '            ns[x] = xs[x]']


def _gen_conv_loop(op):
    """Output planes over ``ob`` output channels at a time; per input channel,
    one loop over the output whose body sums every kernel tap (literal
    offsets) for those channels. Wide: the output rows run over the input's
    padded width as one loop; otherwise (strided) row by row. ``narrow``:
    from a copy of the input with a margin as wide as the padding
    (``narrowed_input``), so wide rows are no longer than they need be."""
    (x,), y, p = op.inputs, op.output, op.params
    head = []
    if p.get('narrow'):
        n = narrowed_input(op)
        head, x = _narrow_lines(x, n), n
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
    chan += ['for p in range({}):'.format(count)] + indent(loop, 1)
    inner += ['for c in range({}):'.format(x.c)] + indent(chan, 1)
    if p['relu']:
        for b in range(ob):
            inner += ['for p in range({}):'.format(count),
                      '    r{0}[p] = max(r{0}[p], numpy.float32(0))'.format(b)]
    return head + ['for o0 in range(0, {}, {}):'.format(y.c, ob)] + \
        indent([rows] + indent(inner, 1), 1)


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
    lines += indent(copy, 3)
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
    the windows of an unpadded max pooling that lie wholly inside the input,
    most of them, as literal taps of slices of the input rows."""
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
    if not mx or ph or pw or not fy or not fx:
        return ['for c in range({}):'.format(y.c)] + indent(general((0, y.h), (0, y.w)), 1)
    # one output row at a time from slices of its window's input rows: LLVM
    # vectorises the strided taps of slices (B-LeNet's 5x30x30 ReLU + 2x2
    # pooling as a standalone loop: 0.55 against 1.02 µs for the general loop)
    body = ['for oy in range({}):'.format(fy)] + indent(
        ['r{0} = S[{1}:{1} + {2}]'.format(ky, x.at('c', 'oy * {} + {}'.format(sy, ky), 0), x.w)
         for ky in range(kh)] +
        ['out = S[{0}:{0} + {1}]'.format(y.at('c', 'oy', 0), fx),
         'for ox in range({}):'.format(fx),
         '    acc = {}'.format(_max_tree(['r{}[ox * {} + {}]'.format(ky, sx, kx)
                                          for ky in range(kh) for kx in range(kw)]))] +
        (['    acc = max(acc, numpy.float32(0))'] if p['relu'] else []) +
        ['    out[ox] = acc'], 1)
    if fx < y.w:
        body += general((0, fy), (fx, y.w))
    if fy < y.h:
        body += general((fy, y.h), (0, y.w))
    return ['for c in range({}):'.format(y.c)] + indent(body, 1)


def _max_tree(terms):
    """``max`` of ``terms`` as a balanced tree of two-argument calls."""
    while len(terms) > 1:
        terms = ['max({}, {})'.format(*terms[i:i + 2]) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def _gen_lrn(op):
    (x,), y, p = op.inputs, op.output, op.params
    half = p['n'] // 2
    if p['beta'] == 0.75:  # t ** -0.75 with square roots, which vectorise
        power = 'numpy.float32(1) / numpy.sqrt(t * numpy.sqrt(t))'
    else:
        power = 't ** numpy.float32({!r})'.format(-p['beta'])
    window = ['for c in range({}):'.format(y.c),
              '    c0 = max(c - {}, 0)'.format(half),
              '    c1 = min(c + {}, {})'.format(half + 1, x.c)]
    scale = 'numpy.float32({!r}) + numpy.float32({!r}) * lrn_sq[i]'.format(
        float(p['k']), float(p['alpha']))
    # The window's squares are summed plane by plane into one buffer, so every
    # inner loop runs along contiguous memory and can vectorise (a 64x30x30 LRN
    # as a standalone numba function: 31 against 176 µs summing across
    # channels a plane apart; see ERROR_MODEL for what else it needs). A plane of x
    # is read whole, rows ws apart (a wide value's extra columns are computed
    # and not copied out); the result goes through the buffer into y's layout.
    n = y.h * x.ws
    first = '{} + {{}} * {} + {}'.format(x.off, x.ps, x.margin * x.ws + x.margin)
    lines = ['lrn_sq = numpy.empty({}, numpy.float32)'.format(n)] + window + [
        '    for i in range({}):'.format(n),
        '        lrn_sq[i] = numpy.float32(0)',
        '    for cc in range(c0, c1):',
        '        for i in range({}):'.format(n),
        '            a = S[{} + i]'.format(first.format('cc')),
        '            lrn_sq[i] += a * a',
        '    for i in range({}):'.format(n),
        '        t = ' + scale]
    if x.compact and y.compact:
        return lines + ['        S[{} + c * {} + i] = S[{} + i] * {}'.format(
            y.off, y.ps, first.format('c'), power)]
    return lines + [
        '        lrn_sq[i] = S[{} + i] * {}'.format(first.format('c'), power),
        '    for y in range({}):'.format(y.h),
        '        for x in range({}):'.format(y.w),
        '            S[{}] = lrn_sq[y * {} + x]'.format(y.at(), x.ws)]


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


def symbolic(op):
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
    for key in ('w', 'wt', 'b', 'scale', 'shift', 'col'):
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

#: numba's error model per kind (default 'python'): LRN divides by its scale
#: per element, and the zero check of the 'python' model stops the
#: vectoriser (a 64x30x30 LRN in the engine, loaded machine: 193 µs with
#: it, 129 without; B-ResNet-110's first head on a quiet one: 144 -> 90 µs
#: with both LRN changes); 'numpy' gives inf/nan as
#: Chainer does, which the engines' non-finite-logit check then refuses.
ERROR_MODEL = {'lrn': 'numpy'}


def function_lines(kind, name, body, args, cache=True):
    """A layer function's source: decorator, signature, body."""
    fm = FASTMATH.get(kind, _CONTRACT)
    return ['@numba.njit(fastmath={}, error_model={!r}, boundscheck=False, nogil=True, '
            'cache={})'.format(
                fm if isinstance(fm, bool) else '{' + ', '.join(map(repr, sorted(fm))) + '}',
                ERROR_MODEL.get(kind, 'python'), cache),
            'def {}(W, S, {}):'.format(name, ', '.join(n for n, _ in args))] + \
        indent(body, 1)

#: Longest run of calls repeated with other offsets that becomes one loop.
MAX_PERIOD = 8


def call_lines(calls, tables, typed=()):
    """Source lines calling ``calls`` (``(function, [offsets])``) in order;
    the offsets passed to a function of ``typed`` as ``numpy.int64`` values,
    not literals (numba then calls the machine code compiled beforehand for
    int64 offsets instead of compiling one copy per call site).
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
            pattern = 'numpy.int64({})' if f in typed else '{}'
            lines.append('{}(W, S, {})'.format(f, ', '.join(pattern.format(a) for a in args)))
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


#: ``take(taken)``: ``taken[0] += 1`` as one atomic instruction (x86 ``lock
#: xadd``), returning the value before: the threads of one batch each take
#: their next sample with it inside the native code (``Program``'s ``run``)
TAKE = [
    '@numba.extending.intrinsic',
    'def take(typingctx, taken):',
    '    """The next sample of ``taken[0]`` (int64), counted up atomically."""',
    "    if not (isinstance(taken, numba.core.types.Array) and taken.ndim == 1",
    "            and taken.dtype == numba.core.types.int64):",
    '        return None  # a typing error: take needs a 1-d int64 array',
    '    def codegen(context, builder, signature, args):',
    '        array = context.make_array(signature.args[0])(context, builder, args[0])',
    '        one = context.get_constant(numba.core.types.int64, 1)',
    "        return builder.atomic_rmw('add', array.data, one, 'seq_cst')",
    '    return numba.core.types.int64(taken), codegen']


def module_header():
    """The generated module's first lines: its imports, ``take`` (``TAKE``)
    and the native ``score`` and ``finite`` of one row of logits
    (``_score``, ``_finite``)."""
    import inspect
    score = inspect.getsource(_score).replace('def _score(', 'def score(', 1)
    finite = inspect.getsource(_finite).replace('def _finite(', 'def finite(', 1)
    from branchynet.jit import vector_bits
    out = ['# compiled with the SLP vectoriser on (jit.slp_vectorize), '
           'LLVM vectors of {} bits preferred'.format(vector_bits()),
           'import math', 'import numba', 'import numba.core.types', 'import numba.extending',
           'import numpy', '', ''] + TAKE + ['', '',
           '@numba.njit(boundscheck=False, nogil=True, cache=True)'] + score.splitlines()
    return out + ['', '', '@numba.njit(boundscheck=False, nogil=True, cache=True)'] + \
        finite.splitlines()
