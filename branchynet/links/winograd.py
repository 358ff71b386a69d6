"""Winograd F(2x2, 3x3) convolution for CPU training, generated with numba.

A 3x3 stride-1 convolution computes each 2x2 block of outputs ("tile") from
a 4x4 block of the padded input with 16 multiplications per input and
output channel instead of 36 (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016):

    Y = A^T [ (G g G^T) * (B^T d B) ] A

with ``g`` a 3x3 filter, ``d`` a 4x4 input block, ``*`` elementwise, and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

(entries 0, 1/2 and 1 in magnitude, so the transforms add and subtract
without scaling the input).

Per sample, the kernel here
1. copies the sample, channels last, into a zero-padded buffer of its own
   (in cache), large enough for whole tiles where an output side is odd;
2. transforms every 4x4 input block (``V``, 16 x Tp x C for the T tiles
   padded to Tp, vectors along the channels);
3. multiplies, per block of R tiles and ``ob`` output channels and for
   each of the 16 positions, ``V`` with the transformed filters ``U``
   (C x 16 x O, ``transform_filters``, once per call): register tiles as
   ``directconv``'s forward tiles, vectors along the output channels;
4. transforms each tile's 16 products back to its 2x2 outputs, adding the
   bias and, as asked, applying ReLU or adding an earlier array
   (``kernelsource.stored_value``).

The backward-data pass of a stride-1 3x3 convolution is a 3x3 convolution of
the output gradient with the flipped filters (``directconv``), so it runs on
the same kernel. The backward-weight kernel (``weight_source``) transforms
the input as above and each tile's output gradient ``dY`` to ``A dY A^T``,
sums their products over the tiles per position (the gradient of ``U``),
and ``weights_from_transform`` maps that back through ``G^T . G``.
Products are summed in another order, and through the transforms, than
Chainer's: results agree with Chainer's to float32 rounding of the larger
transformed values (see tests/links/test_winograd.py).
"""
import os
import threading

import numpy

from branchynet.jit import vector_bits
from branchynet.links.kernelsource import bias_sum_lines, compile_source, stored_value

_lock = threading.Lock()
_kernels = {}

#: G of F(2x2, 3x3) (B^T and A^T are written out in the generated lines)
G = numpy.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], numpy.float64)


def enabled():
    """Whether ``preferred`` may choose these kernels: ``$BRANCHYNET_WINOGRAD``
    is not 0 (read at each call, so a benchmark can compare both)."""
    return os.environ.get('BRANCHYNET_WINOGRAD', '1') not in ('0', 'off', 'false')


def preferred(c_in, o_all, kh, kw, out_h, out_w):
    """Whether a stride-1 convolution of these sizes runs here rather than on
    ``directconv``'s kernel: 3x3, at least 16 input and output channels, at
    least 64 output pixels. Measured against the direct kernel (forward,
    batch 64, two threads, AMD EPYC with AVX-512, quiet machine): 1.41x as
    fast at 16 channels on 30 x 30, 1.32x at 32 on 15 x 15, 1.35x at 64 on
    8 x 8, 1.70x at 96 on 8 x 8, but 0.90x at 16 on 7 x 7."""
    return (kh == kw == 3 and c_in >= 16 and o_all >= 16 and out_h * out_w >= 64
            and enabled())


def tiles(out_h, out_w):
    """(tile rows, tile columns) covering an ``out_h x out_w`` output with 2x2 tiles."""
    return (out_h + 1) // 2, (out_w + 1) // 2


def _geometry(h, w, ph, pw):
    """``(oh, ow, th, tw, hpe, wpe)`` of an ``h x w`` input padded by
    ``ph``/``pw``: the output's sides, its tile rows and columns, and the
    sides of the padded buffer that holds whole tiles."""
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = tiles(oh, ow)
    return oh, ow, th, tw, 2 * th + 2, 2 * tw + 2


def product_tile(out_channels, tile_count):
    """(tiles R, output channels ob, padded tile count) of the product's
    register tile: ``ob`` output channels (vectors along the channels) by R
    tiles, as ``directconv.tile_shape`` sizes its tiles."""
    ob = next(b for b in (32, 16, 8, 4, 2, 1) if out_channels % b == 0)
    r = 12 if ob <= 16 else 8
    return r, ob, -(-tile_count // r) * r


def transform_filters(W):
    """``U`` (C * 16 * O,) float32 of filters ``W`` (O, C, 3, 3): position
    ``(i, j)`` of ``G g G^T`` at ``(c * 16 + i * 4 + j) * O + o``."""
    o, c = W.shape[:2]
    u = numpy.empty(16 * c * o, numpy.float32)
    taps = numpy.ascontiguousarray(W.transpose(1, 2, 3, 0), numpy.float32).reshape(c, 9, o)
    _compiled('filters', _define_filter_transform)(taps, u)
    return u


def _compiled(key, define):
    """The numba function ``define()`` returns, defined (and compiled, or
    loaded from numba's cache) on first use of ``key`` only; a thread that
    lost a race to define it gets the first one's."""
    fn = _kernels.get(key)
    if fn is None:
        fn = define()
        with _lock:
            fn = _kernels.setdefault(key, fn)
    return fn


def _define_filter_transform():
    """The transform of ``transform_filters``: per input channel, ``G g G^T``
    for every output channel at once (vectors along them; a BLAS product of
    these thin shapes took milliseconds on a busy machine)."""
    import numba

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def transform(taps, u):
        c_all, _, o_all = taps.shape
        h = numpy.float32(0.5)
        for c in range(c_all):
            t = taps[c]
            w = u[c * 16 * o_all:]  # this channel's 16 positions, O values each
            for o in range(o_all):  # vectors along the output channels
                g00, g01, g02 = t[0, o], t[1, o], t[2, o]
                g10, g11, g12 = t[3, o], t[4, o], t[5, o]
                g20, g21, g22 = t[6, o], t[7, o], t[8, o]
                # G g: four rows of three (rows 0 and 3 are g's first and last)
                r10, r11, r12 = h * (g00 + g10 + g20), h * (g01 + g11 + g21), \
                    h * (g02 + g12 + g22)
                r20, r21, r22 = h * (g00 - g10 + g20), h * (g01 - g11 + g21), \
                    h * (g02 - g12 + g22)
                # (G g) G^T: position (i, j) at (i * 4 + j) * O + o
                for i, (a, b, d) in enumerate(((g00, g01, g02), (r10, r11, r12),
                                               (r20, r21, r22), (g20, g21, g22))):
                    w[(4 * i) * o_all + o] = a
                    w[(4 * i + 1) * o_all + o] = h * (a + b + d)
                    w[(4 * i + 2) * o_all + o] = h * (a - b + d)
                    w[(4 * i + 3) * o_all + o] = d
    return transform


def _copy_lines(c_in, h, w, wpe, ph, pw):
    """Sample ``n`` of ``x`` into ``xs``, channels last, inside its zero border."""
    return ['for iy in range({}):'.format(h),
            '    for c in range({}):'.format(c_in),
            '        src = n * {} + c * {} + iy * {}'.format(c_in * h * w, h * w, w),
            '        dst = ((iy + {}) * {} + {}) * {} + c'.format(ph, wpe, pw, c_in),
            '        for ix in range({}):'.format(w),
            '            xs[dst + ix * {}] = x[src + ix]'.format(c_in)]


def _input_lines(c_in, th, tw, wpe, tp):
    """``V`` (16 x Tp x C) = ``B^T d B`` of every tile, vectors along the channels."""
    lines = ['for ty in range({}):'.format(th),
             '    for tx in range({}):'.format(tw),
             '        t = ty * {} + tx'.format(tw),
             '        base = (ty * {} + tx * 2) * {}'.format(2 * wpe, c_in),
             '        for c in range({}):'.format(c_in)]
    body = ['d{}{} = xs[base + {} + c]'.format(i, j, (i * wpe + j) * c_in)
            for i in range(4) for j in range(4)]
    for j in range(4):
        body += ['r0{0} = d0{0} - d2{0}'.format(j), 'r1{0} = d1{0} + d2{0}'.format(j),
                 'r2{0} = d2{0} - d1{0}'.format(j), 'r3{0} = d1{0} - d3{0}'.format(j)]
    for k in range(4):
        for col, expr in enumerate(('r{0}0 - r{0}2', 'r{0}1 + r{0}2', 'r{0}2 - r{0}1',
                                  'r{0}1 - r{0}3')):
            body.append('v[{} + t * {} + c] = {}'.format((k * 4 + col) * tp * c_in, c_in,
                                                         expr.format(k)))
    return lines + ['            ' + line for line in body]


def _product_lines(c_in, o_all, tp, r, ob):
    """Per position, ``V`` by ``U`` for the block of R tiles from ``t0`` and
    ``ob`` output channels from ``o0``, in register tiles, into ``mt``
    (16 x R x ob, in cache)."""
    lines = ['for xi in range(16):']
    body = ['a{}_{} = numpy.float32(0)'.format(i, j) for i in range(r) for j in range(ob)]
    body += ['for c in range({}):'.format(c_in),
             '    vt = v[(xi * {} + t0) * {} + c:]'.format(tp, c_in),
             '    uc = u[(c * 16 + xi) * {} + o0:]'.format(o_all)]
    body += ['    v{0} = vt[{1}]'.format(i, i * c_in) for i in range(r)]
    body += ['    u{0} = uc[{0}]'.format(j) for j in range(ob)]
    body += ['    a{0}_{1} += v{0} * u{1}'.format(i, j) for i in range(r) for j in range(ob)]
    body += ['out = mt[xi * {}:]'.format(r * ob)]
    body += ['out[{}] = a{}_{}'.format(i * ob + j, i, j) for i in range(r) for j in range(ob)]
    return lines + ['    ' + line for line in body]


def _output_lines(o_all, r, ob, tiles_all, tw, oh, ow, relu, accumulate):
    """For each tile of the block, ``A^T M A`` plus the bias into ``yt``
    (4 x ob, vectors along the channels), then stored (as ``stored_value``
    says) where the tile's outputs lie inside ``oh x ow``."""
    values = ['p00 + p01 + p02', 'p01 - p02 - p03', 'p10 + p11 + p12', 'p11 - p12 - p13']
    lines = ['for i in range({}):'.format(r),
             '    t = t0 + i']
    body = []
    if tiles_all % r:
        body += ['if t >= {}:'.format(tiles_all), '    break']
    body += ['ty = t // {}'.format(tw), 'tx = t - ty * {}'.format(tw),
             'for j in range({}):'.format(ob)]
    body += ['    m{0}{1} = mt[{2} + i * {3} + j]'.format(k, col, (k * 4 + col) * r * ob, ob)
             for k in range(4) for col in range(4)]
    body += ['    p0{0} = m0{0} + m1{0} + m2{0}'.format(j) for j in range(4)]
    body += ['    p1{0} = m1{0} - m2{0} - m3{0}'.format(j) for j in range(4)]
    body += ['    bj = b[o0 + j]']
    body += ['    yt[{} + j] = {} + bj'.format(q * ob, value) for q, value in enumerate(values)]
    for a in range(2):
        for col in range(2):
            place = '(o0 + j) * {} + (2 * ty + {}) * {} + 2 * tx + {}'.format(oh * ow, a, ow, col)
            store = ['for j in range({}):'.format(ob),
                     '    s = yt[{} + j]'.format((2 * a + col) * ob),
                     '    yn[{}] = {}'.format(place, stored_value('s', relu, accumulate, place))]
            inside = [cond for cond, odd in (('2 * ty + 1 < {}'.format(oh), a and oh % 2),
                                             ('2 * tx + 1 < {}'.format(ow), col and ow % 2)) if odd]
            if inside:
                store = ['if {}:'.format(' and '.join(inside))] + ['    ' + x for x in store]
            body += store
    return lines + ['    ' + line for line in body]


def forward_source(c_in, o_all, h, w, ph, pw, relu=False, accumulate=False):
    """Source of ``kernel(x, u, b, y, start, stop)`` (with ``accumulate``,
    ``kernel(x, u, b, acc, y, start, stop)``): for samples ``start..stop``,
    ``y[n]`` = the 3x3 convolution of ``x[n]`` (``(N, c_in, h, w)``, padded
    by ``ph``/``pw``) with the filters whose transform is ``u``, plus ``b``;
    ReLU of that with ``relu``, ``acc[n]`` plus it with ``accumulate``.
    All arrays flat float32."""
    if relu and accumulate:
        raise ValueError('winograd.forward_source: relu and accumulate do not combine')
    oh, ow, th, tw, hpe, wpe = _geometry(h, w, ph, pw)
    r, ob, tp = product_tile(o_all, th * tw)
    lines = ['def kernel(x, u, b, {}y, start, stop):'.format('acc, ' if accumulate else ''),
             '    xs = numpy.zeros({}, numpy.float32)'.format(hpe * wpe * c_in),
             '    v = numpy.zeros({}, numpy.float32)'.format(16 * tp * c_in),
             '    mt = numpy.empty({}, numpy.float32)'.format(16 * r * ob),
             '    yt = numpy.empty({}, numpy.float32)'.format(4 * ob),
             '    for n in range(start, stop):',
             '        yn = y[n * {}:]'.format(o_all * oh * ow)]
    if accumulate:
        lines.append('        earlier = acc[n * {}:]'.format(o_all * oh * ow))
    body = (_copy_lines(c_in, h, w, wpe, ph, pw) + _input_lines(c_in, th, tw, wpe, tp)
            + ['for t0 in range(0, {}, {}):'.format(tp, r),
               '    for o0 in range(0, {}, {}):'.format(o_all, ob)]
            + ['        ' + line for line in _product_lines(c_in, o_all, tp, r, ob)
               + _output_lines(o_all, r, ob, th * tw, tw, oh, ow, relu, accumulate)])
    return '\n'.join(lines + ['        ' + line for line in body])


def weight_block(c_in, o_all):
    """(input channels cb, output channels ob) of the weight gradient's
    register tile: ``ob`` (vectors along the output channels) by ``cb``,
    at most 256 sums."""
    ob = next(b for b in (32, 16, 8, 4, 2, 1) if o_all % b == 0)
    cb = next(b for b in (32, 16, 8, 4, 2, 1) if c_in % b == 0 and b * ob <= 256)
    return cb, ob


def _gradient_lines(o_all, oh, ow, th, tw):
    """Sample ``n``'s output gradient pixel-major into ``gn`` (rows and columns
    of whole tiles; the cut-off ones stay zero), then ``A dY A^T`` per tile
    into ``gt`` (16 x T x O)."""
    w2 = 2 * tw
    lines = ['for o in range({}):'.format(o_all),
             '    for py in range({}):'.format(oh),
             '        src = n * {} + o * {} + py * {}'.format(o_all * oh * ow, oh * ow, ow),
             '        for px in range({}):'.format(ow),
             '            gn[(py * {} + px) * {} + o] = g[src + px]'.format(w2, o_all),
             'for ty in range({}):'.format(th),
             '    for tx in range({}):'.format(tw),
             '        t = ty * {} + tx'.format(tw),
             '        base = (ty * {} + tx * 2) * {}'.format(2 * w2, o_all),
             '        for o in range({}):'.format(o_all)]
    body = ['g00 = gn[base + o]', 'g01 = gn[base + {} + o]'.format(o_all),
            'g10 = gn[base + {} + o]'.format(w2 * o_all),
            'g11 = gn[base + {} + o]'.format((w2 + 1) * o_all)]
    rows = [('g00', 'g01'), ('g00 + g10', 'g01 + g11'), ('g00 - g10', 'g01 - g11'),
            ('-g10', '-g11')]
    tiles_all = th * tw
    for i, (a, b) in enumerate(rows):
        body += ['a{} = {}'.format(i, a), 'b{} = {}'.format(i, b)]
        for j, expr in enumerate(('a{0}', 'a{0} + b{0}', 'a{0} - b{0}', '-b{0}')):
            body.append('gt[{} + t * {} + o] = {}'.format(
                (i * 4 + j) * tiles_all * o_all, o_all, expr.format(i)))
    return lines + ['            ' + line for line in body]


def _weight_product_lines(c_in, o_all, tp, tiles_all):
    """``gu`` (C x 16 x O) plus, per position, ``V`` by the transformed
    gradient over the sample's tiles, in register tiles."""
    cb, ob = weight_block(c_in, o_all)
    lines = ['for xi in range(16):',
             '    for c0 in range(0, {}, {}):'.format(c_in, cb),
             '        for o0 in range(0, {}, {}):'.format(o_all, ob)]
    body = ['a{}_{} = numpy.float32(0)'.format(i, j) for i in range(cb) for j in range(ob)]
    body += ['for t in range({}):'.format(tiles_all),
             '    vt = v[(xi * {} + t) * {} + c0:]'.format(tp, c_in),
             '    gs = gt[(xi * {} + t) * {} + o0:]'.format(tiles_all, o_all)]
    body += ['    v{0} = vt[{0}]'.format(i) for i in range(cb)]
    body += ['    g{0} = gs[{0}]'.format(j) for j in range(ob)]
    body += ['    a{0}_{1} += v{0} * g{1}'.format(i, j) for i in range(cb) for j in range(ob)]
    body += ['out = gu[c0 * {} + xi * {} + o0:]'.format(16 * o_all, o_all)]
    body += ['out[{}] += a{}_{}'.format(i * 16 * o_all + j, i, j)
             for i in range(cb) for j in range(ob)]
    return lines + ['            ' + line for line in body]


def weight_source(c_in, o_all, h, w, ph, pw, with_bias=True):
    """Source of ``kernel(x, g, gu, gb, start, stop)``: adds to ``gu``
    (C x 16 x O, the gradient of the transformed filters ``U``; see
    ``weights_from_transform``) and, ``with_bias``, to ``gb`` (O) the
    gradients of the samples ``start..stop``; ``x`` the input as in
    ``forward_source``, ``g`` the output gradient ``(N, O, oh, ow)``, all
    flat float32. The gradient of ``M = U * V`` is ``A dY A^T`` per tile, so
    ``U``'s is that times ``V`` summed over the tiles: 16 products with 16
    multiply-adds per tile where the direct kernel makes 36."""
    oh, ow, th, tw, hpe, wpe = _geometry(h, w, ph, pw)
    _, _, tp = product_tile(o_all, th * tw)
    lines = ['def kernel(x, g, gu, gb, start, stop):',
             '    xs = numpy.zeros({}, numpy.float32)'.format(hpe * wpe * c_in),
             '    v = numpy.zeros({}, numpy.float32)'.format(16 * tp * c_in),
             '    gn = numpy.zeros({}, numpy.float32)'.format(4 * th * tw * o_all),
             '    gt = numpy.empty({}, numpy.float32)'.format(16 * th * tw * o_all),
             '    for n in range(start, stop):']
    body = (_copy_lines(c_in, h, w, wpe, ph, pw) + _input_lines(c_in, th, tw, wpe, tp)
            + _gradient_lines(o_all, oh, ow, th, tw)
            + (bias_sum_lines(o_all, oh * ow) if with_bias else [])
            + _weight_product_lines(c_in, o_all, tp, th * tw))
    return '\n'.join(lines + ['        ' + line for line in body])


def weights_from_transform(gu, o_all, c_in):
    """The weight gradient ``(O, C, 3, 3)`` from ``gu`` (C * 16 * O,), the
    gradient of the transformed filters: ``G^T gu G`` per filter."""
    out = numpy.empty((c_in, 9, o_all), numpy.float32)
    _compiled('back', _define_back_transform)(gu.reshape(c_in, 16, o_all), out)
    return numpy.ascontiguousarray(out.reshape(c_in, 3, 3, o_all).transpose(3, 0, 1, 2))


def _define_back_transform():
    """``G^T gu G`` of ``weights_from_transform`` (vectors along the output
    channels)."""
    import numba

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def back(gu, out):
        c_all, _, o_all = gu.shape
        h = numpy.float32(0.5)
        for c in range(c_all):
            m = gu[c]
            d = out[c]
            for o in range(o_all):  # vectors along the output channels
                # G^T M: three rows of four (M's rows at 0, 4, 8, 12)
                r00 = m[0, o] + h * (m[4, o] + m[8, o])
                r01 = m[1, o] + h * (m[5, o] + m[9, o])
                r02 = m[2, o] + h * (m[6, o] + m[10, o])
                r03 = m[3, o] + h * (m[7, o] + m[11, o])
                r10, r11 = h * (m[4, o] - m[8, o]), h * (m[5, o] - m[9, o])
                r12, r13 = h * (m[6, o] - m[10, o]), h * (m[7, o] - m[11, o])
                r20 = h * (m[4, o] + m[8, o]) + m[12, o]
                r21 = h * (m[5, o] + m[9, o]) + m[13, o]
                r22 = h * (m[6, o] + m[10, o]) + m[14, o]
                r23 = h * (m[7, o] + m[11, o]) + m[15, o]
                # (G^T M) G: each row's four to three
                d[0, o] = r00 + h * (r01 + r02)
                d[1, o] = h * (r01 - r02)
                d[2, o] = h * (r01 + r02) + r03
                d[3, o] = r10 + h * (r11 + r12)
                d[4, o] = h * (r11 - r12)
                d[5, o] = h * (r11 + r12) + r13
                d[6, o] = r20 + h * (r21 + r22)
                d[7, o] = h * (r21 - r22)
                d[8, o] = h * (r21 + r22) + r23
    return back


def kernel(kind, c_in, o_all, h, w, ph, pw):
    """The compiled ``kind`` ('forward', 'forward-relu', 'forward-accumulate',
    'weight' or 'weight-bias') kernel for these sizes, compiled on first use."""
    bits = vector_bits()

    def define():
        if kind.startswith('weight'):
            source = weight_source(c_in, o_all, h, w, ph, pw, with_bias=kind == 'weight-bias')
        else:
            source = forward_source(c_in, o_all, h, w, ph, pw, relu=kind == 'forward-relu',
                                    accumulate=kind == 'forward-accumulate')
        return compile_source(source, bits)
    return _compiled((kind, bits, c_in, o_all, h, w, ph, pw), define)
