"""Direct (register-tiled) stride-1 convolution for CPU training, generated with numba.

Three kernels per layer shape, each generated as Python source with every size
a literal and compiled once per shape:

* forward: ``y = conv(x, W) + b``, each sample zero-padded into a buffer
  of the kernel's own (in cache) before its tiles. A tile is ``R`` neighbouring output
  pixels of one row times ``ob`` output channels, each of its ``R * ob`` sums a
  scalar of the generated code; per input channel and tap it reads ``R`` input
  values and ``ob`` weights (stored ``[c][ky][kx][o]``, so a tap's weights for
  consecutive output channels are consecutive). LLVM's SLP vectoriser packs
  the ``ob`` sums of a pixel into vector registers, where they stay across all
  input channels and taps. Where a row holds two whole 512-bit vectors
  (``forward_layout``), a tile is 32 pixels of a row times 8 channels and the
  vectors run along the row instead (stored straight into the output).
* backward-data: the same kernel on the output gradient padded by
  ``k - 1 - pad``, with the weights flipped and their channel axes swapped
  (the gradient of a stride-1 convolution is a convolution). Where the input
  already has a gradient from another use (a residual block's input feeds its
  first convolution and its shortcut), each stored value is added to it
  (``forward_source(accumulate=True)``): Chainer would add the two in a
  separate, single-threaded pass.
* backward-weight: per input channel and block of ``ob`` output channels, the
  ``kh * kw * ob`` sums of ``gW`` are scalars, accumulated over every pixel of
  a sample from the output gradient copied pixel-major ``(OH, OW, O)`` a
  sample at a time; a layer with a bias sums its gradient per channel from
  the same sample (``kernelsource.bias_sum_lines``).

Where ``winograd.choose`` names a form (3x3 or 5x5, 16 or more channels, 64
or more output pixels), the three passes run on ``winograd``'s kernels
instead, with the same splits and the same signatures.

Samples are split into ranges that the kernels' threads take one at a time
(``kernelthreads.run_split``); each range of the backward-weight kernel sums
into its own ``gW``, and those are added in order.
The direct forward and backward-data kernels compute every output with the
same order of multiply-adds as a sum over channels and taps (the Winograd
kernels sum through their transforms); Chainer's im2col and GEMM path sums
in another order, so results agree to float32 rounding.
"""
import threading

import chainer
import numpy

from branchynet.jit import vector_bits
import branchynet.links.winograd as winograd
from branchynet.links.kernelsource import bias_sum_lines, compile_source, stored_value
from branchynet.links.kernelthreads import pieces, run_split

#: Most output channels per tile (two AVX-512 vectors of float32).
MAX_OB = 32
#: Vector registers (of 16 floats) of sums a forward tile aims at.
SUMS = 16
#: Most pixels per forward tile.
MAX_R = 12
#: Scalar sums of a forward tile with vectors along the row (16 vectors of 16).
PIXEL_SUMS = 256
_lock = threading.Lock()
_kernels = {}


def _block(channels, limit):
    """The largest of 32, 16, ..., 1 that divides ``channels`` and is at most ``limit``."""
    return next(b for b in (32, 16, 8, 4, 2, 1) if b <= limit and channels % b == 0)


def tile_shape(out_channels, out_width):
    """(pixels R, output channels ob) of a forward tile with vectors across channels."""
    ob = _block(out_channels, MAX_OB)
    most = max(1, min(out_width, MAX_R, SUMS * 16 // max(16, ob)))
    r = next(r for r in range(most, 0, -1) if out_width % r == 0)
    return (r if 2 * r >= most else most), ob


def pixel_tile_shape(out_channels, out_width):
    """(pixels R, output channels ob) of a forward tile with vectors along the row."""
    r = next(r for r in (32, 16, 8) if out_width % r == 0) if out_width % 8 == 0 else \
        min(out_width, 16)
    ob = _block(out_channels, max(1, PIXEL_SUMS // r))
    return r, ob


def forward_layout(out_width, bits):
    """'pixels' (vectors along the output row) where a row holds two whole
    vectors, else 'channels' (vectors across output channels). Measured on a
    16-channel 3x3 layer on 32x32 with 512-bit vectors: 2.6 ms against 4.4
    (batch 64, one thread, Intel Xeon AVX-512); at 16x16 and 8x8 the channel
    form is faster, and with 256-bit vectors the two are within 2 %."""
    return 'pixels' if bits >= 512 and out_width % (2 * bits // 32) == 0 else 'channels'


def _forward_tile(r, ob, first, geo, layout, relu=False, accumulate=False):
    """Lines of one forward tile: ``r`` pixels from output column ``first``
    (an expression) of row ``oy``, output channels ``o0 .. o0 + ob``; with
    ``relu``, each sum ``a`` is stored as ``numpy.maximum(a, 0)`` would give
    it (``a`` where ``a > 0`` or NaN, else ``+0.0``); with ``accumulate``, as
    ``earlier + a``, ``earlier`` the value at the same place of ``acc``."""
    c_in, o_all, hp, wp, oh, ow, kh, kw = geo
    lines = ['a{}_{} = b[o0 + {}]'.format(i, j, j) for i in range(r) for j in range(ob)]
    lines += ['for c in range({}):'.format(c_in),
              '    xc = xn[c * {} + oy * {} + {}:]'.format(hp * wp, wp, first),
              '    wc = w[c * {} + o0:]'.format(kh * kw * o_all),
              '    for ky in range({}):'.format(kh),
              '        for kx in range({}):'.format(kw)]
    body = ['x{} = xc[ky * {} + kx + {}]'.format(i, wp, i) for i in range(r)]
    body += ['w{} = wc[(ky * {} + kx) * {} + {}]'.format(j, kw, o_all, j) for j in range(ob)]
    body += ['a{0}_{1} += w{1} * x{0}'.format(i, j) for i in range(r) for j in range(ob)]
    lines += ['            ' + line for line in body]
    lines.append('out = yn[o0 * {} + oy * {} + {}:]'.format(oh * ow, ow, first))
    if accumulate:
        lines.append('earlier = accn[o0 * {} + oy * {} + {}:]'.format(oh * ow, ow, first))
    if layout == 'pixels':
        # consecutive stores of a channel's pixels: vectors along the row
        places = [(j * oh * ow + i, 'a{}_{}'.format(i, j)) for j in range(ob) for i in range(r)]
        lines += ['out[{}] = {}'.format(k, stored_value(a, relu, accumulate, k)) for k, a in places]
        return lines
    # consecutive stores of each pixel's sums: vectors across output channels
    lines += ['sums[{}] = a{}_{}'.format(i * ob + j, i, j) for i in range(r) for j in range(ob)]
    lines += ['for j in range({}):'.format(ob),
              '    for i in range({}):'.format(r),
              '        v = sums[i * {} + j]'.format(ob),
              '        out[j * {0} + i] = {1}'.format(
                  oh * ow, stored_value('v', relu, accumulate, 'j * {} + i'.format(oh * ow)))]
    return lines


def _sample_lines(name, c_in, hp, wp, ph, pw):
    """Lines making ``name`` the sample ``n`` of ``x`` zero-padded by ``ph``/``pw``:
    a slice of ``x`` where there is no padding, else a copy into ``xs`` (one
    sample, its border zeroed once per call; in cache, where a padded copy of
    the whole batch would go through memory twice more)."""
    h, w = hp - 2 * ph, wp - 2 * pw
    if not ph and not pw:
        return ['{} = x[n * {}:]'.format(name, c_in * h * w)]
    return ['for c in range({}):'.format(c_in),
            '    for iy in range({}):'.format(h),
            '        src = n * {} + c * {} + iy * {}'.format(c_in * h * w, h * w, w),
            '        dst = c * {} + (iy + {}) * {} + {}'.format(hp * wp, ph, wp, pw),
            '        for ix in range({}):'.format(w),
            '            xs[dst + ix] = x[src + ix]',
            '{} = xs'.format(name)]


def _scratch_line(c_in, hp, wp, ph, pw):
    return ['    xs = numpy.zeros({}, numpy.float32)'.format(c_in * hp * wp)] if ph or pw else []


def forward_source(c_in, o_all, hp, wp, kh, kw, layout='channels', ph=0, pw=0, relu=False,
                   accumulate=False):
    """Source of ``kernel(x, w, b, y, start, stop)``: ``y[n] = conv(x[n], w) + b``
    for the samples ``start..stop``; ``x`` the input ``(N, c_in, hp - 2 ph,
    wp - 2 pw)``, zero-padded here to ``(hp, wp)`` a sample at a time, ``w``
    the weights ``[c][ky][kx][o]``, ``y`` ``(N, o_all, oh, ow)``, all flat;
    with ``relu``, ``y`` is ReLU of that, as ``F.relu`` computes it. With
    ``accumulate``, ``kernel(x, w, b, acc, y, start, stop)`` stores
    ``acc + conv(x, w) + b`` (``acc`` an array of ``y``'s shape, read only)."""
    if relu and accumulate:
        raise ValueError('forward_source: relu and accumulate do not combine')
    oh, ow = hp - kh + 1, wp - kw + 1
    geo = (c_in, o_all, hp, wp, oh, ow, kh, kw)
    r, ob = (tile_shape if layout == 'channels' else pixel_tile_shape)(o_all, ow)
    full, rest = divmod(ow, r)
    rows = ['for ox0 in range(0, {}, {}):'.format(full * r, r)] + \
        ['    ' + line for line in _forward_tile(r, ob, 'ox0', geo, layout, relu, accumulate)]
    if rest:
        rows += _forward_tile(rest, ob, str(full * r), geo, layout, relu, accumulate)
    lines = ['def kernel(x, w, b, {}y, start, stop):'.format('acc, ' if accumulate else ''),
             '    sums = numpy.empty({}, numpy.float32)'.format(r * ob)]
    lines += _scratch_line(c_in, hp, wp, ph, pw)
    lines += ['    for n in range(start, stop):']
    lines += ['        ' + line for line in _sample_lines('xn', c_in, hp, wp, ph, pw)]
    lines += ['        yn = y[n * {}:]'.format(o_all * oh * ow)]
    if accumulate:
        lines += ['        accn = acc[n * {}:]'.format(o_all * oh * ow)]
    lines += [
             '        for o0 in range(0, {}, {}):'.format(o_all, ob),
             '            for oy in range({}):'.format(oh)]
    return '\n'.join(lines + ['                ' + line for line in rows])


def weight_block(o_all, taps, bits=256):
    """Output channels summed together by the backward-weight kernel: at most
    ``MAX_OB`` and as many sums as 32 vectors of ``bits`` hold."""
    return _block(o_all, max(1, min(MAX_OB, bits // taps)))


def weight_bits(o_all, taps, bits):
    """The vector width for a backward-weight kernel on a host with ``bits``:
    512 only where a tap's sums fill at least two 512-bit vectors (32 output
    channels), else at most 256. Measured with 3x3 taps, batch 64, one thread
    (Intel Xeon AVX-512): 16 output channels, 3.3 ms with 256 bits against
    7.5 ms with 512; 32 channels, 2.4 ms with 512 against 3.4 ms."""
    if bits >= 512 and weight_block(o_all, taps, bits) < 32:
        return 256
    return bits


def _transpose_lines(o_all, pixels):
    """Lines copying sample ``n`` of ``g`` (channel-major) into ``gn`` pixel-major,
    16 pixels of a channel at a time (contiguous reads, which LLVM loads as
    vectors, and strided stores), the pixels after the last whole 16 one by one."""
    full = pixels - pixels % 16
    lines = ['src = n * {}'.format(o_all * pixels),
             'for p0 in range(0, {}, 16):'.format(full),
             '    for o in range({}):'.format(o_all),
             '        gs = g[src + o * {} + p0:]'.format(pixels)]
    lines += ['        v{} = gs[{}]'.format(i, i) for i in range(16)]
    lines += ['        gn[(p0 + {}) * {} + o] = v{}'.format(i, o_all, i) for i in range(16)]
    if full < pixels:
        lines += ['for p in range({}, {}):'.format(full, pixels),
                  '    for o in range({}):'.format(o_all),
                  '        gn[p * {} + o] = g[src + o * {} + p]'.format(o_all, pixels)]
    return lines


def weight_source(c_in, o_all, hp, wp, kh, kw, bits=256, ph=0, pw=0, with_bias=True):
    """Source of ``kernel(x, g, gw, gb, start, stop)``: adds to ``gw``
    (``[c][ky][kx][o]``) the weight gradient and, ``with_bias``, to ``gb``
    (``[o]``) the bias gradient of the samples ``start..stop``; ``x`` the
    input, padded here as in ``forward_source``, ``g`` the output gradient
    ``(N, o_all, oh, ow)``, all flat. Each sample's gradient is first copied
    pixel-major into a buffer of the kernel's own (in cache): no transposed
    copy of the whole batch."""
    oh, ow = hp - kh + 1, wp - kw + 1
    taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]
    ob = weight_block(o_all, len(taps), bits)
    body = ['g{} = gr[ox * {} + {}]'.format(j, o_all, j) for j in range(ob)]
    body += ['x{} = xr[{} + ox]'.format(t, ky * wp + kx) for t, (ky, kx) in enumerate(taps)]
    body += ['a{0}_{1} += g{1} * x{0}'.format(t, j) for t in range(len(taps))
             for j in range(ob)]
    lines = ['def kernel(x, g, gw, gb, start, stop):'] + _scratch_line(c_in, hp, wp, ph, pw)
    lines += ['    gn = numpy.empty({}, numpy.float32)'.format(oh * ow * o_all),
              '    for n in range(start, stop):']
    lines += ['        ' + line for line in _sample_lines('xn', c_in, hp, wp, ph, pw)]
    lines += ['        ' + line for line in _transpose_lines(o_all, oh * ow)]
    if with_bias:
        lines += ['        ' + line for line in bias_sum_lines(o_all, oh * ow)]
    lines += ['        for c in range({}):'.format(c_in),
              '            for o0 in range(0, {}, {}):'.format(o_all, ob)]
    inner = ['a{}_{} = numpy.float32(0)'.format(t, j) for t in range(len(taps))
             for j in range(ob)]
    inner += ['for oy in range({}):'.format(oh),
              '    xr = xn[c * {} + oy * {}:]'.format(hp * wp, wp),
              '    gr = gn[oy * {} + o0:]'.format(ow * o_all),
              '    for ox in range({}):'.format(ow)] + ['        ' + line for line in body]
    inner.append('out = gw[c * {} + o0:]'.format(len(taps) * o_all))
    inner += ['out[{}] += a{}_{}'.format(t * o_all + j, t, j) for t in range(len(taps))
              for j in range(ob)]
    return '\n'.join(lines + ['                ' + line for line in inner])


def kernel(kind, c_in, o_all, hp, wp, kh, kw, ph=0, pw=0):
    """The compiled ``kind`` ('forward', 'forward-relu', 'forward-accumulate',
    'weight' or 'weight-bias')
    kernel for an input of ``c_in`` channels padded by ``ph``/``pw`` to ``hp x wp``,
    ``o_all`` output channels and ``kh x kw`` taps, compiled on first use."""
    bits = vector_bits()
    shape = (c_in, o_all, hp, wp, kh, kw)
    key = (kind, bits) + shape + (ph, pw)
    fn = _kernels.get(key)
    if fn is None:
        if kind.startswith('forward'):
            source = forward_source(*shape, layout=forward_layout(wp - kw + 1, bits),
                                    ph=ph, pw=pw, relu=kind == 'forward-relu',
                                    accumulate=kind == 'forward-accumulate')
        else:
            bits = weight_bits(o_all, kh * kw, bits)
            source = weight_source(*shape, bits=bits, ph=ph, pw=pw,
                                   with_bias=kind == 'weight-bias')
        fn = compile_source(source, bits)
        with _lock:
            fn = _kernels.setdefault(key, fn)
    return fn


def _forward_task(x, W, b, ph, pw, relu, earlier):
    """``(task, y)``: ``task(start, stop)`` computes samples ``start..stop`` of
    ``y`` as ``forward`` says, on the Winograd kernel where
    ``winograd.choose`` names a form, else on the direct kernel."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    o, _, kh, kw = W.shape
    bias = numpy.zeros(o, numpy.float32) if b is None else numpy.ascontiguousarray(b)
    y = numpy.empty((n, o, hp - kh + 1, wp - kw + 1), numpy.float32)
    flat_x, flat_y = numpy.ascontiguousarray(x).reshape(-1), y.reshape(-1)
    kind = 'forward-relu' if relu else 'forward'
    if earlier is not None:
        if earlier.shape != y.shape or earlier.dtype != y.dtype:
            raise ValueError('directconv.forward: earlier is {} {}; expected float32 {}'.format(
                earlier.dtype, earlier.shape, y.shape))
        kind = 'forward-accumulate'
    form = winograd.choose(c, o, kh, kw, y.shape[2], y.shape[3])
    if form:
        weights = winograd.transform_filters(W, form)
        fn = winograd.kernel(kind, form, c, o, h, w, ph, pw)
    else:
        weights = numpy.ascontiguousarray(W.transpose(1, 2, 3, 0)).reshape(-1)
        fn = kernel(kind, c, o, hp, wp, kh, kw, ph, pw)
    if earlier is None:
        return (lambda start, stop: fn(flat_x, weights, bias, flat_y, start, stop)), y
    acc = numpy.ascontiguousarray(earlier).reshape(-1)
    return (lambda start, stop: fn(flat_x, weights, bias, acc, flat_y, start, stop)), y


def forward(x, W, b, ph=0, pw=0, relu=False, earlier=None):
    """``y`` (N, O, OH, OW): ``x`` zero-padded by ``ph``/``pw`` (in the kernel)
    convolved with ``W`` (O, C, kh, kw), stride 1, plus ``b`` (or no bias);
    with ``relu``, ReLU of that, applied as each output is stored; with
    ``earlier`` (float32, y's shape), ``earlier`` plus that, added as each
    output is stored (``earlier`` is left as it was)."""
    task, y = _forward_task(x, W, b, ph, pw, relu, earlier)
    run_split(task, x.shape[0])
    return y


def _data_task(gy, W, ph, pw, earlier):
    o, c, kh, kw = W.shape
    flipped = numpy.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return _forward_task(gy, flipped, None, kh - 1 - ph, kw - 1 - pw, False, earlier)


def backward_data(gy, W, ph, pw, earlier=None):
    """The input gradient (N, C, H, W) of a stride-1 convolution with padding
    ``ph``/``pw`` (each at most the kernel size - 1) from its output gradient;
    with ``earlier`` (the input's gradient from its other uses), their sum."""
    task, gx = _data_task(gy, W, ph, pw, earlier)
    run_split(task, gy.shape[0])
    return gx


def _weight_task(x, gy, kh, kw, ph, pw, with_bias, ranges):
    """``(task, result)``: ``task(start, stop)`` (one of ``ranges``) sums that
    range's part of the weight (and bias) gradient, on the Winograd kernel
    where ``winograd.choose`` names a form (its part is the gradient of the
    transformed filters), else on the direct kernel; ``result()`` adds the
    parts in order: the same result however the threads take them."""
    n, c, h, w = x.shape
    o = gy.shape[1]
    kind = 'weight-bias' if with_bias else 'weight'
    form = winograd.choose(c, o, kh, kw, gy.shape[2], gy.shape[3])
    if form:
        fn = winograd.kernel(kind, form, c, o, h, w, ph, pw)
        size = form.n ** 2 * c * o

        def weights(total):
            return winograd.weights_from_transform(total, form, o, c)
    else:
        fn = kernel(kind, c, o, h + 2 * ph, w + 2 * pw, kh, kw, ph, pw)
        size = c * kh * kw * o

        def weights(total):
            return numpy.ascontiguousarray(total.reshape(c, kh, kw, o).transpose(3, 0, 1, 2))
    partial = numpy.zeros((len(ranges), size), numpy.float32)
    bias = numpy.zeros((len(ranges), o), numpy.float32)
    x, g = numpy.ascontiguousarray(x).reshape(-1), numpy.ascontiguousarray(gy).reshape(-1)
    row = {r: i for i, r in enumerate(ranges)}

    def task(start, stop):
        i = row[start, stop]
        fn(x, g, partial[i], bias[i], start, stop)

    def result():
        gw = weights(partial.sum(axis=0))
        return (gw, bias.sum(axis=0)) if with_bias else gw
    return task, result


def backward_weight(x, gy, kh, kw, ph=0, pw=0, with_bias=False):
    """The weight gradient (O, C, kh, kw) from the input (padded by ``ph``/``pw``
    in the kernel) and the output gradient; with ``with_bias`` the pair
    (weight gradient, bias gradient (O,)), the latter summed in the same kernel."""
    ranges = pieces(x.shape[0])
    task, result = _weight_task(x, gy, kh, kw, ph, pw, with_bias, ranges)
    run_split(task, x.shape[0], parts=ranges)
    return result()


def backward(x, gy, W, ph, pw, earlier=None):
    """``(input gradient, weight gradient, bias gradient)`` as ``backward_data``
    and ``backward_weight`` give them, from one split of the batch: each range
    of samples runs both kernels, the second while that range's output
    gradient is still in cache, and the threads are handed work once instead
    of twice."""
    kh, kw = W.shape[2:]
    ranges = pieces(x.shape[0])
    data, gx = _data_task(gy, W, ph, pw, earlier)
    weight, result = _weight_task(x, gy, kh, kw, ph, pw, True, ranges)

    def both(start, stop):
        data(start, stop)
        weight(start, stop)
    run_split(both, x.shape[0], parts=ranges)
    return (gx,) + result()


def usable(x_shape, W_shape, stride, pad_hw, input_grad=True):
    """Whether a convolution of these shapes runs on the direct kernels: stride 1,
    padding at most the kernel size - 1, output channels in multiples of 8 (a
    vector's worth of sums per pixel), and so input channels where the input
    gradient is wanted (it is a convolution with the input's channels as its
    outputs). A first layer on 3 image channels, whose input needs no
    gradient, runs here: B-AlexNet's (3 to 32 channels, 5x5, 32x32, batch 512,
    two threads, Intel Xeon) took 15.7 ms forward and 22.0 ms for the weight
    gradient, against 103 ms forward and 165 ms for both as a GEMM."""
    o, c, kh, kw = W_shape
    return (tuple(stride) == (1, 1) and pad_hw[0] <= kh - 1 and pad_hw[1] <= kw - 1
            and o % 8 == 0 and (c % 8 == 0 or not input_grad) and x_shape[1] == c)


class DirectConvolution2D(chainer.FunctionNode):
    """``F.convolution_2d`` with stride 1 on the direct kernels (see ``usable``),
    with ``relu`` followed by ``F.relu`` (applied as the outputs are stored).

    Keeps its input for the weight gradient (the GEMM path keeps an im2col
    matrix ``kh * kw`` times as large); the kernels pad a sample at a time.
    Its gradients are computed directly, not as differentiable functions: no
    double backpropagation."""

    def __init__(self, pad_hw, relu=False):
        self.ph, self.pw = pad_hw
        self.relu = relu

    def forward(self, inputs):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        self.retain_inputs((0, 1))
        if self.relu:
            self.retain_outputs((0,))
        return forward(x, W, b, self.ph, self.pw, self.relu),

    def backward(self, indexes, grad_outputs):
        return self._gradients(indexes, grad_outputs, None)

    def backward_accumulate(self, target_input_indexes, grad_outputs, grad_inputs):
        """``backward`` plus the gradients the inputs already have from their
        other uses (``grad_inputs``): the input's is added in the
        backward-data kernel as it stores (Chainer's ``earlier + new``, the
        same float32 sums with Chainer's default eager gradient sums; with
        ``chainer.config.lazy_grad_sum`` Chainer adds in another order), the
        others as Chainer adds them."""
        earlier = dict(zip(target_input_indexes, grad_inputs))
        into = earlier.get(0)
        array = None if into is None else into.array
        fused = (isinstance(array, numpy.ndarray) and array.dtype == numpy.float32
                 and array.shape == self.inputs[0].shape)
        grads = self._gradients(target_input_indexes, grad_outputs, array if fused else None)
        out = []
        for i, g in zip(target_input_indexes, grads):
            e = earlier[i]
            out.append(g if e is None or (i == 0 and fused) else e + g)
        return tuple(out)

    def _gradients(self, indexes, grad_outputs, earlier_x):
        x, W = self.get_retained_inputs()
        x, W = x.array, W.array
        gy = grad_outputs[0].array
        if self.relu:  # ReLU's gradient as Chainer's ReLUGrad2 computes it
            gy = gy * (self.get_retained_outputs()[0].array > 0)
        gy = numpy.ascontiguousarray(gy)
        kh, kw = W.shape[2:]
        grads = {}
        if 0 in indexes and (1 in indexes or 2 in indexes):
            grads[0], grads[1], grads[2] = backward(x, gy, W, self.ph, self.pw, earlier_x)
        elif 0 in indexes:
            grads[0] = backward_data(gy, W, self.ph, self.pw, earlier=earlier_x)
        else:
            grads[1], grads[2] = backward_weight(x, gy, kh, kw, self.ph, self.pw,
                                                 with_bias=True)
        return tuple(chainer.Variable(grads[i]) for i in indexes)
