"""From links to ops: ``Builder`` translates a link tree into ``Op``s on
``Value``s (``layout``) and collects the weights into one vector (test-mode
BatchNormalization folded into the convolution before it, ReLU fused into
the layer it follows; dropout and an ``SL`` without a test-mode layer vanish).
"""

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.engines.fast import folded_conv_weights, fused_layers, pool_output_size
from branchynet.links import FL, SL, Net, pair
from branchynet.engines.numba.layout import NotCompilable, Value


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
