"""Winograd convolution F(m x m, r x r) for CPU training, generated with numba.

A stride-1 ``r x r`` convolution computes each ``m x m`` block of outputs
("tile") from an ``n x n`` block of the padded input, ``n = m + r - 1``, with
``n * n`` multiplications per input and output channel instead of
``m * m * r * r`` (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016):

    Y = A^T [ (G g G^T) * (B^T d B) ] A

with ``g`` an ``r x r`` filter, ``d`` an ``n x n`` input block and ``*``
elementwise. ``matrices`` builds ``A^T``, ``G`` and ``B^T`` exactly (as
fractions) from the interpolation points 0, 1, -1, 2, -2, 1/2, -1/2 and
infinity (the first ``m + r - 2`` finite ones and infinity), as
the transpose of Toom-Cook polynomial multiplication; the generated lines
carry their entries as constants, skipping zeros and multiplying by no
+-1. ``choose`` picks F(4x4, 3x3) (36 products for 144 multiply-adds) for
3x3 layers and F(4x4, 5x5) (64 for 400) for 5x5 ones; any form whose
points suffice can be generated (the tests also run F(2x2, 3x3), 16 for 36,
and F(2x2, 5x5), 36 for 100).

Per sample, or per group of samples where one has fewer than
``GROUP_TILES`` tiles (``group``), the forward kernel
1. copies the samples, channels last, into a zero-padded buffer of its own
   (in cache), large enough for whole tiles where an output side is not a
   multiple of ``m``;
2. transforms every input block (``V``, ``n * n`` x Tp x C for the T tiles
   padded to Tp, vectors along the channels);
3. multiplies, per block of R tiles and ``ob`` output channels and for
   each of the ``n * n`` positions, ``V`` with the transformed filters ``U``
   (C x n*n x O, ``transform_filters``, once per call): register tiles as
   ``directconv``'s forward tiles, vectors along the output channels;
4. transforms each tile's products back to its ``m x m`` outputs, adding the
   bias and, as asked, applying ReLU or adding an earlier array
   (``kernelsource.stored_value``).

The backward-data pass of a stride-1 convolution is a convolution of the
output gradient with the flipped filters (``directconv``), so it runs on
the same kernel. The backward-weight kernel (``weight_source``) transforms
the input as above and each tile's output gradient ``dY`` to ``A dY A^T``,
sums their products over the tiles per position (the gradient of ``U``),
and ``weights_from_transform`` maps that back through ``G^T . G``.
Products are summed in another order, and through the transforms, than
Chainer's: results agree with Chainer's to float32 rounding of the larger
transformed values (see tests/links/test_winograd.py).
"""
import collections
import fractions
import functools
import math
import os
import threading

import numpy

from branchynet.jit import vector_bits
from branchynet.links.kernelsource import bias_sum_lines, compile_source, stored_value

_lock = threading.Lock()
_kernels = {}

class Form(collections.namedtuple('Form', 'm r')):
    """A Winograd form: ``m x m`` outputs per tile from ``r x r`` filters,
    through ``n x n`` input blocks and positions."""
    __slots__ = ()

    @property
    def n(self):
        """The side of an input block (and of the transformed filters): ``m + r - 1``."""
        return self.m + self.r - 1
#: Finite interpolation points, in the order they are used (infinity is the last).
POINTS = (0, 1, -1, 2, -2, fractions.Fraction(1, 2), fractions.Fraction(-1, 2))


def enabled():
    """Whether ``choose`` may choose these kernels: ``$BRANCHYNET_WINOGRAD``
    is not 0 (read at each call, so a benchmark can compare both)."""
    return os.environ.get('BRANCHYNET_WINOGRAD', '1') not in ('0', 'off', 'false')


def choose(c_in, o_all, kh, kw, out_h, out_w):
    """The ``Form`` a stride-1 convolution of these sizes runs on here, or
    None for ``directconv``'s kernel: F(4x4, 3x3) for 3x3 filters and
    F(4x4, 5x5) for 5x5, with at least 16 input and output channels and at
    least 64 output pixels. Measured (two threads, AMD EPYC with AVX-512;
    forward, input gradient, weight gradient): F(2x2, 3x3) was 1.41x as fast
    as the direct kernel at 16 channels on 30 x 30 (batch 64), 1.32x at 32
    on 15 x 15, 1.35x at 64 on 8 x 8, 1.70x at 96 on 8 x 8, but 0.90x at 16
    on 7 x 7; F(4x4, 3x3) took 0.82/0.83/0.82 of F(2x2, 3x3)'s time at 16
    channels on 30 x 30, 0.58/0.53/0.47 at 32 on 15 x 15, 0.70/0.74/0.94 at
    64 on 8 x 8 and 0.75/0.75/0.89 at 96 on 8 x 8 (batch 512); F(2x2, 5x5)
    took 0.59 of the direct kernel's forward time at 32 to 64 channels on
    16 x 16 (batch 512), and F(4x4, 5x5) took 0.67 of F(2x2, 5x5)'s forward
    time and 0.66 of its backward time (both gradients) there, 0.74/0.72 at
    16 to 32 channels on 32 x 32 (batch 64) and 0.62/0.65 at 64 to 64 on
    8 x 8 (batch 512)."""
    if not (kh == kw and c_in >= 16 and o_all >= 16 and out_h * out_w >= 64 and enabled()):
        return None
    return {3: Form(4, 3), 5: Form(4, 5)}.get(kh)


def _inverse(rows):
    """The inverse of a square matrix of fractions (Gauss-Jordan)."""
    size = len(rows)
    work = [list(row) + [fractions.Fraction(int(i == j)) for j in range(size)]
            for i, row in enumerate(rows)]
    for col in range(size):
        pivot = next(i for i in range(col, size) if work[i][col] != 0)
        work[col], work[pivot] = work[pivot], work[col]
        scale = work[col][col]
        work[col] = [v / scale for v in work[col]]
        for i in range(size):
            if i != col and work[i][col] != 0:
                factor = work[i][col]
                work[i] = [a - factor * b for a, b in zip(work[i], work[col])]
    return [row[size:] for row in work]


def _evaluation(points, size):
    """Rows evaluating a polynomial of ``size`` coefficients at each point,
    then at infinity (its leading coefficient)."""
    rows = [[fractions.Fraction(a) ** k for k in range(size)] for a in points]
    return rows + [[fractions.Fraction(int(k == size - 1)) for k in range(size)]]


@functools.lru_cache(maxsize=None)
def matrices(m, r):
    """``(A^T, G, B^T)`` of F(m, r) as tuples of rows of fractions
    (``m x n``, ``n x r``, ``n x n``). Toom-Cook computes the product of
    polynomials ``h`` (m coefficients) and ``g`` (r) as
    ``C [(V_m h) * (V_r g)]``, ``V`` evaluating at the points and ``C`` the
    inverse of ``V_n``; its transpose in ``h`` is the correlation of an
    ``n``-vector with ``g``: ``A^T = V_m^T``, ``G = V_r``, ``B^T = C^T``,
    each row of ``B^T`` scaled to whole numbers and ``G``'s divided to match."""
    n = m + r - 1
    if n - 1 > len(POINTS):
        raise ValueError('winograd.matrices: F({}, {}) needs {} points; {} are defined'.format(
            m, r, n - 1, len(POINTS)))
    points = POINTS[:n - 1]
    at = [list(col) for col in zip(*_evaluation(points, m))]
    g = _evaluation(points, r)
    bt = [list(col) for col in zip(*_inverse(_evaluation(points, n)))]
    for j, row in enumerate(bt):
        scale = 1
        for v in row:
            scale = scale * v.denominator // math.gcd(scale, v.denominator)
        bt[j] = [v * scale for v in row]
        g[j] = [v / scale for v in g[j]]
    return tuple(map(tuple, at)), tuple(map(tuple, g)), tuple(map(tuple, bt))


def _combination(coefficients, names):
    """The expression ``sum(c * name)``: zeros left out, +-1 as additions and
    subtractions, other constants as float32."""
    terms = []
    for c, name in zip(coefficients, names):
        if c == 0:
            continue
        size = abs(c)
        term = name if size == 1 else 'numpy.float32({!r}) * {}'.format(float(size), name)
        terms.append(('-' if c < 0 else '+', term))
    if not terms:
        return 'numpy.float32(0)'
    sign, first = terms[0]
    return ''.join([('-' if sign == '-' else '') + first] +
                   [' {} {}'.format(s, t) for s, t in terms[1:]])


def _sandwich_lines(left, right, load, store, prefix):
    """Lines computing ``left X right^T`` for ``X`` read as ``load(k, q)``
    (an expression), each result given to ``store(i, j, expression)`` (a
    line): the rows of ``left`` first, into scalars named from ``prefix``."""
    rows, inner, cols = len(left), len(left[0]), len(right[0])
    lines = ['{}x{}_{} = {}'.format(prefix, k, q, load(k, q))
             for k in range(inner) for q in range(cols)]
    lines += ['{}t{}_{} = {}'.format(prefix, i, q, _combination(
        left[i], ['{}x{}_{}'.format(prefix, k, q) for k in range(inner)]))
        for i in range(rows) for q in range(cols)]
    lines += [store(i, j, _combination(right[j], ['{}t{}_{}'.format(prefix, i, q)
                                                  for q in range(cols)]))
              for i in range(rows) for j in range(len(right))]
    return lines


def _transposed(rows):
    return tuple(zip(*rows))


def tiles(out_h, out_w, m):
    """(tile rows, tile columns) covering an ``out_h x out_w`` output with ``m x m`` tiles."""
    return -(-out_h // m), -(-out_w // m)


def _geometry(form, h, w, ph, pw):
    """``(oh, ow, th, tw, hpe, wpe)`` of an ``h x w`` input padded by
    ``ph``/``pw``: the output's sides, its tile rows and columns, and the
    sides of the padded buffer that holds whole tiles."""
    m, r = form
    oh, ow = h + 2 * ph - r + 1, w + 2 * pw - r + 1
    th, tw = tiles(oh, ow, m)
    return oh, ow, th, tw, m * th + r - 1, m * tw + r - 1


#: Fewest tiles a kernel transforms and multiplies at once: samples with
#: fewer tiles each are taken in groups (``group``).
GROUP_TILES = 16


def group(tile_count):
    """Samples taken at once by the kernels: enough for ``GROUP_TILES`` tiles
    (a register tile of the product holds 8 or 12; one 8 x 8 sample holds 4
    tiles of F(4x4, 3x3))."""
    return max(1, -(-GROUP_TILES // tile_count))


def product_tile(out_channels, tile_count):
    """(tiles R, output channels ob, padded tile count) of the product's
    register tile: ``ob`` output channels (vectors along the channels) by R
    tiles, as ``directconv.tile_shape`` sizes its tiles."""
    ob = next(b for b in (32, 16, 8, 4, 2, 1) if out_channels % b == 0)
    r = 12 if ob <= 16 else 8
    return r, ob, -(-tile_count // r) * r


def transform_filters(W, form):
    """``U`` (C * n * n * O,) float32 of filters ``W`` (O, C, r, r): position
    ``(i, j)`` of ``G g G^T`` at ``(c * n * n + i * n + j) * O + o``."""
    o, c = W.shape[:2]
    u = numpy.empty(form.n ** 2 * c * o, numpy.float32)
    taps = numpy.ascontiguousarray(W.transpose(1, 2, 3, 0), numpy.float32).reshape(-1)
    kernel('filters', form, c, o)(taps, u, 0, c)
    return u


def weights_from_transform(gu, form, o_all, c_in):
    """The weight gradient ``(O, C, r, r)`` from ``gu`` (C * n * n * O,), the
    gradient of the transformed filters: ``G^T gu G`` per filter."""
    r = form.r
    out = numpy.empty(c_in * r * r * o_all, numpy.float32)
    kernel('back', form, c_in, o_all)(numpy.ascontiguousarray(gu).reshape(-1), out, 0, c_in)
    return numpy.ascontiguousarray(out.reshape(c_in, r, r, o_all).transpose(3, 0, 1, 2))


def _per_filter_source(names, matrix, side_in, side_out, o_all, prefix):
    """Source of ``kernel(src, dst, start, stop)`` (``names`` gives those two
    and the names of one channel's slices of them): for input channels
    ``start..stop``, ``matrix X matrix^T`` of each output channel's
    ``side_in x side_in`` block of ``src`` into its ``side_out x side_out``
    block of ``dst``, both ``(C, side, side, O)``, vectors along the output
    channels."""
    src, dst, a, b = names
    lines = ['def kernel({}, {}, start, stop):'.format(src, dst),
             '    for c in range(start, stop):',
             '        {} = {}[c * {}:]'.format(a, src, side_in * side_in * o_all),
             '        {} = {}[c * {}:]'.format(b, dst, side_out * side_out * o_all),
             '        for o in range({}):'.format(o_all)]
    body = _sandwich_lines(
        matrix, matrix, lambda k, q: '{}[{} + o]'.format(a, (k * side_in + q) * o_all),
        lambda i, j, e: '{}[{} + o] = {}'.format(b, (i * side_out + j) * o_all, e), prefix)
    return '\n'.join(lines + ['            ' + line for line in body])


def _filter_source(form, o_all):
    """Source of ``kernel(taps, u, start, stop)``: ``G g G^T`` of every
    filter (``taps`` ``(C, r, r, O)``)."""
    _, g, _ = matrices(*form)
    return _per_filter_source(('taps', 'u', 't', 'w'), g, form.r, form.n,
                              o_all, 'f')


def _back_source(form, o_all):
    """Source of ``kernel(gu, out, start, stop)``: ``G^T gu G`` into ``out``
    ``(C, r, r, O)``."""
    _, g, _ = matrices(*form)
    return _per_filter_source(('gu', 'out', 's', 'd'), _transposed(g), form.n,
                              form.r, o_all, 'b')


def _copy_lines(c_in, h, w, hpe, wpe, ph, pw, g):
    """Samples ``n0 .. n0 + ns`` of ``x`` into ``xs``, each channels last
    inside its zero border; the places of the samples a short last group
    lacks (``ns < g``) are zeroed, so every loop after this one runs over
    the whole group with its sizes literal (a loop bound read from ``ns``
    made F(2x2, 5x5)'s forward pass 2.5x as slow); only the stores and the
    bias sums read ``ns``."""
    size = hpe * wpe * c_in
    return ['for s in range(ns, {}):'.format(g),
            '    xs[s * {}:(s + 1) * {}] = 0'.format(size, size),
            'for s in range(ns):',
            '    for iy in range({}):'.format(h),
            '        for c in range({}):'.format(c_in),
            '            src = (n0 + s) * {} + c * {} + iy * {}'.format(c_in * h * w, h * w, w),
            '            dst = (s * {} + (iy + {}) * {} + {}) * {} + c'.format(
                hpe * wpe, ph, wpe, pw, c_in),
            '            for ix in range({}):'.format(w),
            '                xs[dst + ix * {}] = x[src + ix]'.format(c_in)]


def _input_lines(form, c_in, th, tw, hpe, wpe, tp, g):
    """``V`` (n*n x Tp x C) = ``B^T d B`` of every tile of the group's
    samples (tile ``s * th * tw + ty * tw + tx``), vectors along the channels."""
    m, n = form.m, form.n
    _, _, bt = matrices(*form)
    lines = ['for t in range({}):'.format(g * th * tw),
             '    s = t // {}'.format(th * tw),
             '    ty = (t - s * {}) // {}'.format(th * tw, tw),
             '    tx = t - s * {} - ty * {}'.format(th * tw, tw),
             '    base = (s * {} + ty * {} + tx * {}) * {}'.format(hpe * wpe, m * wpe, m, c_in),
             '    for c in range({}):'.format(c_in)]
    body = _sandwich_lines(
        bt, bt, lambda k, q: 'xs[base + {} + c]'.format((k * wpe + q) * c_in),
        lambda i, j, e: 'v[{} + t * {} + c] = {}'.format((i * n + j) * tp * c_in, c_in, e), 'd')
    return lines + ['        ' + line for line in body]


def _product_lines(positions, c_in, o_all, tp, r, ob):
    """Per position, ``V`` by ``U`` for the block of R tiles from ``t0`` and
    ``ob`` output channels from ``o0``, in register tiles, into ``mt``
    (positions x R x ob, in cache)."""
    lines = ['for xi in range({}):'.format(positions)]
    body = ['a{}_{} = numpy.float32(0)'.format(i, j) for i in range(r) for j in range(ob)]
    body += ['for c in range({}):'.format(c_in),
             '    vt = v[(xi * {} + t0) * {} + c:]'.format(tp, c_in),
             '    uc = u[(c * {} + xi) * {} + o0:]'.format(positions, o_all)]
    body += ['    v{0} = vt[{1}]'.format(i, i * c_in) for i in range(r)]
    body += ['    u{0} = uc[{0}]'.format(j) for j in range(ob)]
    body += ['    a{0}_{1} += v{0} * u{1}'.format(i, j) for i in range(r) for j in range(ob)]
    body += ['out = mt[xi * {}:]'.format(r * ob)]
    body += ['out[{}] = a{}_{}'.format(i * ob + j, i, j) for i in range(r) for j in range(ob)]
    return lines + ['    ' + line for line in body]


def _output_lines(form, o_all, r, ob, th, tw, oh, ow, relu, accumulate):
    """For each tile of the block (those of the group's ``ns`` samples),
    ``A^T M A`` plus the bias into ``yt`` (m*m x ob, vectors along the
    channels), then stored (as ``stored_value`` says) where the tile's
    outputs lie inside ``oh x ow``."""
    m, n = form.m, form.n
    at, _, _ = matrices(*form)
    lines = ['for i in range({}):'.format(r),
             '    t = t0 + i']
    body = ['if t >= ns * {}:'.format(th * tw), '    break',
            's = t // {}'.format(th * tw),
            'yo = (n0 + s) * {}'.format(o_all * oh * ow),
            'ty = (t - s * {}) // {}'.format(th * tw, tw),
            'tx = t - s * {} - ty * {}'.format(th * tw, tw),
            'for j in range({}):'.format(ob), '    bj = b[o0 + j]']
    body += ['    ' + line for line in _sandwich_lines(
        at, at, lambda k, q: 'mt[{} + i * {} + j]'.format((k * n + q) * r * ob, ob),
        lambda a, c, e: 'yt[{} + j] = {} + bj'.format((a * m + c) * ob, e), 'm')]
    for a in range(m):
        for col in range(m):
            place = 'yo + (o0 + j) * {} + ({} * ty + {}) * {} + {} * tx + {}'.format(
                oh * ow, m, a, ow, m, col)
            store = ['for j in range({}):'.format(ob),
                     '    s = yt[{} + j]'.format((a * m + col) * ob),
                     '    y[{}] = {}'.format(place, stored_value('s', relu, accumulate, place))]
            inside = ['{} * {} + {} < {}'.format(m, t, k, side)
                      for t, k, side in (('ty', a, oh), ('tx', col, ow)) if k >= side % m > 0]
            if inside:
                store = ['if {}:'.format(' and '.join(inside))] + ['    ' + x for x in store]
            body += store
    return lines + ['    ' + line for line in body]


def forward_source(form, c_in, o_all, h, w, ph, pw, relu=False, accumulate=False):
    """Source of ``kernel(x, u, b, y, start, stop)`` (with ``accumulate``,
    ``kernel(x, u, b, acc, y, start, stop)``): for samples ``start..stop``,
    ``y[n]`` = the ``r x r`` convolution of ``x[n]`` (``(N, c_in, h, w)``,
    padded by ``ph``/``pw``) with the filters whose transform is ``u``, plus
    ``b``; ReLU of that with ``relu``, ``acc[n]`` plus it with ``accumulate``.
    All arrays flat float32."""
    if relu and accumulate:
        raise ValueError('winograd.forward_source: relu and accumulate do not combine')
    m, positions = form.m, form.n ** 2
    oh, ow, th, tw, hpe, wpe = _geometry(form, h, w, ph, pw)
    g = group(th * tw)
    r, ob, tp = product_tile(o_all, g * th * tw)
    lines = ['def kernel(x, u, b, {}y, start, stop):'.format('acc, ' if accumulate else ''),
             '    xs = numpy.zeros({}, numpy.float32)'.format(g * hpe * wpe * c_in),
             '    v = numpy.zeros({}, numpy.float32)'.format(positions * tp * c_in),
             '    mt = numpy.empty({}, numpy.float32)'.format(positions * r * ob),
             '    yt = numpy.empty({}, numpy.float32)'.format(m * m * ob)]
    if accumulate:
        lines.append('    earlier = acc')
    lines += ['    for n0 in range(start, stop, {}):'.format(g),
              '        ns = min({}, stop - n0)'.format(g)]
    body = (_copy_lines(c_in, h, w, hpe, wpe, ph, pw, g)
            + _input_lines(form, c_in, th, tw, hpe, wpe, tp, g)
            + ['for t0 in range(0, {}, {}):'.format(tp, r),
               '    for o0 in range(0, {}, {}):'.format(o_all, ob)]
            + ['        ' + line for line in _product_lines(positions, c_in, o_all, tp, r, ob)
               + _output_lines(form, o_all, r, ob, th, tw, oh, ow, relu, accumulate)])
    return '\n'.join(lines + ['        ' + line for line in body])


def weight_block(c_in, o_all):
    """(input channels cb, output channels ob) of the weight gradient's
    register tile: ``ob`` (vectors along the output channels) by ``cb``,
    at most 256 sums."""
    ob = next(b for b in (32, 16, 8, 4, 2, 1) if o_all % b == 0)
    cb = next(b for b in (32, 16, 8, 4, 2, 1) if c_in % b == 0 and b * ob <= 256)
    return cb, ob


def _gradient_lines(form, o_all, oh, ow, th, tw, tp, g):
    """The output gradient of the group's samples pixel-major into ``gn``
    (rows and columns of whole tiles; the cut-off ones stay zero, and so do
    the samples a short group lacks), then ``A dY A^T`` per tile into ``gt``
    (n*n x Tp x O)."""
    m, n = form.m, form.n
    at, _, _ = matrices(*form)
    a = _transposed(at)
    w2 = m * tw
    size = m * m * th * tw
    lines = ['for s in range(ns, {}):'.format(g),
             '    gn[s * {}:(s + 1) * {}] = 0'.format(size * o_all, size * o_all),
             'for s in range(ns):',
             '    for o in range({}):'.format(o_all),
             '        for py in range({}):'.format(oh),
             '            src = (n0 + s) * {} + o * {} + py * {}'.format(
                 o_all * oh * ow, oh * ow, ow),
             '            for px in range({}):'.format(ow),
             '                gn[(s * {} + py * {} + px) * {} + o] = g[src + px]'.format(
                 size, w2, o_all),
             'for t in range({}):'.format(g * th * tw),
             '    s = t // {}'.format(th * tw),
             '    ty = (t - s * {}) // {}'.format(th * tw, tw),
             '    tx = t - s * {} - ty * {}'.format(th * tw, tw),
             '    base = (s * {} + ty * {} + tx * {}) * {}'.format(size, m * w2, m, o_all),
             '    for o in range({}):'.format(o_all)]
    body = _sandwich_lines(
        a, a, lambda k, q: 'gn[base + {} + o]'.format((k * w2 + q) * o_all),
        lambda i, j, e: 'gt[{} + t * {} + o] = {}'.format((i * n + j) * tp * o_all,
                                                           o_all, e), 'g')
    return lines + ['        ' + line for line in body]


def _weight_product_lines(positions, c_in, o_all, tp, tile_count):
    """``gu`` (C x n*n x O) plus, per position, ``V`` by the transformed
    gradient over the group's tiles, in register tiles."""
    cb, ob = weight_block(c_in, o_all)
    lines = ['for xi in range({}):'.format(positions),
             '    for c0 in range(0, {}, {}):'.format(c_in, cb),
             '        for o0 in range(0, {}, {}):'.format(o_all, ob)]
    body = ['a{}_{} = numpy.float32(0)'.format(i, j) for i in range(cb) for j in range(ob)]
    body += ['for t in range({}):'.format(tile_count),
             '    vt = v[(xi * {} + t) * {} + c0:]'.format(tp, c_in),
             '    gs = gt[(xi * {} + t) * {} + o0:]'.format(tp, o_all)]
    body += ['    v{0} = vt[{0}]'.format(i) for i in range(cb)]
    body += ['    g{0} = gs[{0}]'.format(j) for j in range(ob)]
    body += ['    a{0}_{1} += v{0} * g{1}'.format(i, j) for i in range(cb) for j in range(ob)]
    body += ['out = gu[c0 * {} + xi * {} + o0:]'.format(positions * o_all, o_all)]
    body += ['out[{}] += a{}_{}'.format(i * positions * o_all + j, i, j)
             for i in range(cb) for j in range(ob)]
    return lines + ['            ' + line for line in body]


def weight_source(form, c_in, o_all, h, w, ph, pw, with_bias=True):
    """Source of ``kernel(x, g, gu, gb, start, stop)``: adds to ``gu``
    (C x n*n x O, the gradient of the transformed filters ``U``; see
    ``weights_from_transform``) and, ``with_bias``, to ``gb`` (O) the
    gradients of the samples ``start..stop``; ``x`` the input as in
    ``forward_source``, ``g`` the output gradient ``(N, O, oh, ow)``, all
    flat float32. The gradient of ``M = U * V`` is ``A dY A^T`` per tile, so
    ``U``'s is that times ``V`` summed over the tiles: ``n * n`` products per
    tile where the direct kernel makes ``m * m * r * r``."""
    m, positions = form.m, form.n ** 2
    oh, ow, th, tw, hpe, wpe = _geometry(form, h, w, ph, pw)
    g = group(th * tw)
    _, _, tp = product_tile(o_all, g * th * tw)
    lines = ['def kernel(x, g, gu, gb, start, stop):',
             '    xs = numpy.zeros({}, numpy.float32)'.format(g * hpe * wpe * c_in),
             '    v = numpy.zeros({}, numpy.float32)'.format(positions * tp * c_in),
             '    gn = numpy.zeros({}, numpy.float32)'.format(g * m * m * th * tw * o_all),
             '    gt = numpy.empty({}, numpy.float32)'.format(positions * tp * o_all),
             '    for n0 in range(start, stop, {}):'.format(g),
             '        ns = min({}, stop - n0)'.format(g)]
    bias = ['for n in range(n0, n0 + ns):'] + [
        '    ' + line for line in bias_sum_lines(o_all, oh * ow)] if with_bias else []
    body = (_copy_lines(c_in, h, w, hpe, wpe, ph, pw, g)
            + _input_lines(form, c_in, th, tw, hpe, wpe, tp, g)
            + _gradient_lines(form, o_all, oh, ow, th, tw, tp, g) + bias
            + _weight_product_lines(positions, c_in, o_all, tp, g * th * tw))
    return '\n'.join(lines + ['        ' + line for line in body])


def kernel(kind, form, c_in, o_all, h=None, w=None, ph=None, pw=None):
    """The compiled ``kind`` kernel of ``form`` for these sizes, compiled on
    first use: 'forward', 'forward-relu', 'forward-accumulate', 'weight' or
    'weight-bias' (all sizes given), or the filter transforms 'filters' and
    'back' (channel counts only)."""
    bits = vector_bits()

    def define():
        if kind == 'filters':
            source = _filter_source(form, o_all)
        elif kind == 'back':
            source = _back_source(form, o_all)
        elif kind.startswith('weight'):
            source = weight_source(form, c_in, o_all, h, w, ph, pw,
                                   with_bias=kind == 'weight-bias')
        else:
            source = forward_source(form, c_in, o_all, h, w, ph, pw,
                                    relu=kind == 'forward-relu',
                                    accumulate=kind == 'forward-accumulate')
        return compile_source(source, bits)
    key = (kind, bits, tuple(form), c_in, o_all, h, w, ph, pw)
    fn = _kernels.get(key)
    if fn is None:
        fn = define()
        with _lock:
            fn = _kernels.setdefault(key, fn)
    return fn
