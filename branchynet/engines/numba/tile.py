"""The register-tiled convolution kernel ('tile') and the compiler setting it needs.

A tile is ``R`` neighbouring output pixels of one row times ``ob`` output
channels, each of its ``R * ob`` sums a scalar variable of the generated
code. Per input channel and kernel tap, the body reads ``R`` input values
and ``ob`` weights (stored transposed, ``[c][tap][o]``, so a tap's weights
for consecutive output channels are consecutive) and does ``R * ob``
multiply-adds. LLVM's SLP vectoriser packs each pixel's ``ob`` sums into
vector registers (the weights a vector load, the input value a broadcast),
so the sums stay in registers across all input channels and taps: no load
and store of the output per input channel as in the loop kernel, which makes
small planes (B-ResNet-110's 8x8) several times faster. The sums leave
through a small scratch area (consecutive stores, what the vectoriser
starts from) into the output planes.

numba turns the SLP vectoriser off by default; ``jit.slp_vectorize()`` turns it
on while the generated code compiles.
"""
import numpy

from branchynet.engines.numba.layout import VECTOR

#: Most output channels per tile (two AVX-512 vectors).
MAX_OB = 32

#: Vector registers of sums a tile aims at (the multiply-adds' latency
#: hidden; the input values and weights of a tap fit in the rest).
SUMS = 16

#: Most pixels per tile (each holds a register for its input value).
MAX_R = 12


def tile_shape(op):
    """(pixels R, output channels ob) of ``op``'s tiles: as many pixels as
    ``SUMS`` registers of sums hold (at most ``MAX_R``), fewer where that
    many divide the row and at least half as many do (a narrower last tile
    is a second copy of the code: longer to compile)."""
    y = op.output
    ob = next(b for b in (32, 16, 8, 4, 2, 1) if b <= MAX_OB and y.c % b == 0)
    most = max(1, min(y.w, MAX_R, SUMS // max(1, ob // VECTOR)))
    r = next(r for r in range(most, 0, -1) if y.w % r == 0)
    return (r if 2 * r >= most else most), ob


def tile_scratch(op):
    """Floats of the slab's transient area a tile's sums pass through."""
    r, ob = tile_shape(op)
    return r * ob


def transposed_weights(op, weights):
    """``op``'s convolution weights (``[o][c][tap]`` at ``params['w']`` in
    ``weights``) as the tile kernel reads them: ``[c][tap][o]``."""
    x, y = op.inputs[0], op.output
    kh, kw = op.params['k']
    n = y.c * x.c * kh * kw
    w = weights[op.params['w']:op.params['w'] + n].reshape(y.c, x.c * kh * kw)
    return numpy.ascontiguousarray(w.T).ravel()


def _tile(op, r, ob, first):
    """Lines of one tile of ``r`` pixels starting at output column ``first``
    (an expression) of row ``oy``, output channels ``o0``..``o0 + ob``. Every
    index is a slice's start plus loop counters and literals: numba then
    knows it is not negative (no wraparound select, which the vectoriser
    would turn into gathers)."""
    x, y, p = op.inputs[0], op.output, op.params
    kh, kw = p['k']
    sy, sx = p['stride']
    shift = x.margin - p['pad']  # where the padded window starts inside the margin
    lines = ['bias = W[{} + o0:]'.format(p['b'])]
    for i in range(r):
        for j in range(ob):
            lines.append('a{}_{} = bias[{}]'.format(i, j, j))
    lines += ['for c in range({}):'.format(x.c),
              '    xc = S[{} + c * {} + (oy * {} + {}) * {} + {} + ({}) * {}:]'.format(
                  x.off, x.ps, sy, shift, x.ws, shift, first, sx),
              '    wc = W[{} + c * {} + o0:]'.format(p['wt'], kh * kw * y.c),
              '    for ky in range({}):'.format(kh),
              '        for kx in range({}):'.format(kw)]
    body = ['x{} = xc[ky * {} + kx + {}]'.format(i, x.ws, i * sx) for i in range(r)]
    body += ['w{} = wc[(ky * {} + kx) * {} + {}]'.format(j, kw, y.c, j) for j in range(ob)]
    body += ['a{0}_{1} += w{1} * x{0}'.format(i, j) for i in range(r) for j in range(ob)]
    lines += ['            ' + line for line in body]
    lines.append('sums = S[{}:]'.format(p['col']))
    for i in range(r):
        for j in range(ob):
            value = 'a{}_{}'.format(i, j)
            if p['relu']:
                value = 'max({}, numpy.float32(0))'.format(value)
            lines.append('sums[{}] = {}'.format(i * ob + j, value))
    m = y.margin  # the output's own layout: wide (margin 0) or with a margin
    lines += ['out = S[{} + o0 * {} + (oy + {}) * {} + {} + {}:]'.format(
                  y.off, y.ps, m, y.ws, m, first)]
    if p.get('shortcut') is None:
        return lines + ['for j in range({}):'.format(ob),
                        '    for i in range({}):'.format(r),
                        '        out[j * {} + i] = sums[i * {} + j]'.format(y.ps, ob)]
    sc, s = op.inputs[1], p['shortcut']  # relu(sum + shortcut), as ``residual``
    return lines + [
        'sc = S[{} + o0 * {} + (oy * {} + {}) * {} + {} + ({}) * {}:]'.format(
            sc.off, sc.ps, s, sc.margin, sc.ws, sc.margin, first, s),
        'for j in range({}):'.format(ob),
        '    for i in range({}):'.format(r),
        '        v = sums[i * {} + j]'.format(ob),
        '        if o0 + j < {}:'.format(sc.c),
        '            v += sc[j * {} + i * {}]'.format(sc.ps, s),
        '        out[j * {} + i] = max(v, numpy.float32(0))'.format(y.ps)]


def gen_conv_tile(op):
    """A convolution (any kernel, stride and padding; wide or packed output)
    as tiles of ``tile_shape(op)``; a row's last pixels that fill no whole
    tile form one narrower tile."""
    y = op.output
    r, ob = tile_shape(op)
    full, rest = divmod(y.w, r)
    rows = ['for ox0 in range(0, {}, {}):'.format(full * r, r)] + \
        ['    ' + line for line in _tile(op, r, ob, 'ox0')]
    if rest:
        rows += _tile(op, rest, ob, str(full * r))
    return ['for o0 in range(0, {}, {}):'.format(y.c, ob),
            '    for oy in range({}):'.format(y.h)] + ['        ' + line for line in rows]


def fuse_tiled(ops, keep):
    """The ``id``s of the ops of ``ops`` a tiled convolution now does as it writes (its
    stores write any layout, one pixel at a time): a plain copy of its output
    (the margin a padded convolution after it reads) and the residual block
    its output starts (the shortcut added, then ReLU: ``shortcut`` param, the
    shortcut its second input). Only where the convolution's output has that
    one reader and is none of ``keep`` (values read after the ops run). The
    convolution's ``fused`` param names what it took over."""
    readers = {}
    for op in ops:
        for v in op.inputs:
            readers.setdefault(id(v), []).append(op)
    gone = set()
    for op in ops:
        if op.kind != 'conv' or op.params.get('kernel') != 'tile' or \
                any(op.output is v for v in keep) or len(readers.get(id(op.output), ())) != 1:
            continue
        (after,) = readers[id(op.output)]
        if after.kind == 'copy' and after.params['scale'] is None and not after.params['relu']:
            op.output = after.output
            op.params['fused'] = 'copy'
        elif after.kind == 'residual' and after.inputs[0] is op.output and \
                after.inputs[1] is not op.output and not op.params['relu']:
            op.inputs = [op.inputs[0], after.inputs[1]]
            op.params['shortcut'] = after.params['stride']
            op.params['fused'] = 'residual'
            op.output = after.output
        else:
            continue
        gone.add(id(after))
    return gone
