"""A trained network read as a frozen trunk and its final classifier.

``Trunk.of(network)`` accepts a ``BranchyNet`` with only its final exit (or,
with ``drop_early_exits=True``, any BranchyNet: its early heads are left
out), or a trained ``chainer.Sequential`` / ``chainer.ChainList`` of layers
forming a flat network (plain functions in a Sequential are wrapped in
``FL``), whose last ``final_layers`` layers are the classifier. It never
changes the network: ``build`` copies the layers into a new ``BranchyNet``.

A *boundary* ``b`` (1 <= b <= len(layers) - 1) is the point after trunk
layer ``b - 1``: a branch point as ``BranchyNet.branch_points`` counts them.
``describe()`` runs one sample through the trunk in test mode and returns,
per boundary, the activation's shape and the multiply-adds (MACs) of the
trunk up to it, counted as ``branchynet.measures.costs`` counts them
(convolutions and linear layers).
"""
import copy

import chainer
import numpy

from branchynet.links import FL, Branch
from branchynet.links.cpukernels import run_frozen
from branchynet.measures import costs
from branchynet.net import BranchyNet
from branchynet.validation import InvalidType, InvalidValue, brief


def count_macs(links, x):
    """``(macs per sample, output)`` of running ``links`` in turn on ``x`` (test mode)."""
    def run(h):
        for link in links:
            h = link(h)
        return h
    return costs.count_macs(run, x)


def _as_layers(network):
    if isinstance(network, chainer.Sequential):
        layers = list(network._layers)
    elif isinstance(network, chainer.ChainList):
        layers = list(network)
    elif isinstance(network, (list, tuple)):
        layers = list(network)
    else:
        raise InvalidType('network must be a trained BranchyNet, chainer.Sequential, '
                          'chainer.ChainList or list of layers, got a {}: {}'.format(
                              type(network).__name__, brief(network)))
    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Branch):
            raise InvalidValue('network layer {} is a Branch: pass the BranchyNet itself, '
                               'not its list of layers'.format(i + 1))
        if isinstance(layer, chainer.Link):
            out.append(layer)
        elif callable(layer):
            out.append(FL(layer))
        else:
            raise InvalidType('network layer {} must be a chainer Link or a function, got '
                              '{}'.format(i + 1, brief(layer)))
    return out


class Trunk:
    """The frozen layers of a trained network and its final classifier.

    ``layers`` (the trunk) and ``final_head`` are the network's own link
    objects, read only; ``input_shape`` is one sample's shape.
    """

    def __init__(self, layers, final_head, input_shape, confidence='entropy'):
        self.layers = list(layers)
        self.final_head = list(final_head)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.confidence = confidence
        self._described = None

    @classmethod
    def of(cls, network, input_shape=None, final_layers=1, drop_early_exits=False):
        """The trunk of ``network`` (see the module's docstring)."""
        if isinstance(network, Trunk):
            return network
        if isinstance(network, BranchyNet):
            if network.numexits() > 1 and not drop_early_exits:
                raise InvalidValue(
                    'network already has {} early exit(s) (branch points {}): pass a network '
                    'with only its final exit, or drop_early_exits=True to place exits on its '
                    'trunk and final classifier alone'.format(
                        network.numexits() - 1, network.branch_points[:-1]))
            shape = input_shape if input_shape is not None else network.input_shape
            if shape is None:
                raise InvalidValue('the BranchyNet has no input_shape: pass input_shape=(C, H, '
                                   'W), one sample\'s shape')
            if network.branch_points[-1] != len(network.trunk):
                raise InvalidValue('the final Branch must come after the last trunk layer')
            return cls(list(network.trunk), list(network.branches[-1]), shape,
                       network.confidence)
        layers = _as_layers(network)
        if isinstance(final_layers, bool) or not isinstance(final_layers, int) or \
                not 1 <= final_layers < len(layers):
            raise InvalidValue('final_layers must be how many of the network\'s last layers '
                               'form its classifier, 1 to {}, got {!r}'.format(
                                   max(1, len(layers) - 1), final_layers))
        if input_shape is None:
            raise InvalidValue('input_shape is needed for a {}: pass input_shape=(C, H, W), '
                               'one sample\'s shape'.format(type(network).__name__))
        return cls(layers[:-final_layers], layers[-final_layers:], input_shape)

    def sample(self, xp=numpy):
        return xp.zeros((1,) + self.input_shape, numpy.float32)

    def describe(self):
        """Per boundary: ``shapes[b]`` (one sample's activation shape), ``macs[b]``
        (trunk MACs up to it); plus ``main_macs`` (trunk and final head),
        ``head_macs`` (the final head's) and ``classes``. Computed once."""
        if self._described is not None:
            return self._described
        h = self.sample()
        shapes, macs, total = {}, {}, 0
        try:
            for i, layer in enumerate(self.layers):
                m, h = count_macs([layer], h)
                total += m
                shapes[i + 1], macs[i + 1] = tuple(h.shape[1:]), total
            head_macs, z = count_macs(self.final_head, h)
        except Exception as e:
            raise InvalidValue('the network does not run on one sample of input_shape {}: '
                               '{}: {}'.format(self.input_shape, type(e).__name__, e)) from e
        if z.ndim != 2:
            raise InvalidValue('the final classifier must give (samples, classes) logits, '
                               'gave shape {}'.format(z.shape))
        self._described = {'shapes': shapes, 'macs': macs, 'trunk_macs': total,
                           'head_macs': head_macs, 'main_macs': total + head_macs,
                           'classes': int(z.shape[1])}
        return self._described

    def boundaries(self):
        """Every boundary a head may attach at: 1 .. len(layers) - 1 (the end
        of the trunk is the final exit's)."""
        return list(range(1, len(self.layers)))

    def share(self, b):
        """Share of the main network's MACs computed before boundary ``b``."""
        d = self.describe()
        return d['macs'][b] / max(1, d['main_macs'])

    def check_points(self, points):
        """``points`` as a sorted list of distinct valid boundaries."""
        if isinstance(points, (int, numpy.integer)) and not isinstance(points, bool):
            points = [points]
        try:
            pts = [int(p) for p in points]
        except (TypeError, ValueError):
            raise InvalidValue('points must be a list of layer boundaries (integers 1 to {}), '
                               'got {}'.format(len(self.layers) - 1, brief(points))) from None
        bad = [p for p in pts if not 1 <= p < len(self.layers)]
        if bad or len(set(pts)) != len(pts) or any(
                isinstance(p, bool) or float(p) != int(p) for p in points):
            raise InvalidValue('points must be distinct layer boundaries, integers 1 to {} '
                               '(boundary b is after trunk layer b), got {}'.format(
                                   len(self.layers) - 1, brief(points)))
        return sorted(pts)

    def features(self, x, points, batchsize=256):
        """Yield, per batch of ``x``, the list of activations at ``points``
        (sorted boundaries), in test mode, as host arrays."""
        for i in range(0, len(x), batchsize):
            yield self.batch_features(x[i:i + batchsize], points)

    def batch_features(self, xb, points, final=False):
        """Activations of one batch at ``points`` (and the final logits with
        ``final``), test mode, no graph; convolutions, pooling and LRN on the
        CPU training kernels (``cpukernels.run_frozen``: the same function,
        summed in another order than Chainer's)."""
        out, h, start = [], xb, 0
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for p in points:
                for layer in self.layers[start:p]:
                    h = run_frozen(layer, h)
                start = p
                out.append(chainer.as_array(h))
            if final:
                for layer in self.layers[start:]:
                    h = run_frozen(layer, h)
                for layer in self.final_head:
                    h = run_frozen(layer, h)
                out.append(chainer.as_array(h))
        return out

    def build(self, points, heads, copy_trunk=True, **kwargs):
        """A ``BranchyNet``: this trunk with ``heads[i]`` (a list of links) at
        ``points[i]`` and the final head last. The trunk and final head are
        copied (``copy_trunk``), and so are the heads. ``kwargs`` go to
        ``BranchyNet`` (``input_shape`` is set)."""
        pts = self.check_points(points)
        if pts != [int(p) for p in points] or len(heads) != len(pts):
            raise InvalidValue('points must be increasing and match heads one to one, got '
                               '{} points and {} heads'.format(len(points), len(heads)))
        dup = copy.deepcopy if copy_trunk else (lambda v: v)
        layers, start = [], 0
        for p, head in zip(pts, heads):
            layers += [dup(link) for link in self.layers[start:p]]
            layers.append(Branch([copy.deepcopy(link) for link in head]))
            start = p
        layers += [dup(link) for link in self.layers[start:]]
        layers.append(Branch([dup(link) for link in self.final_head]))
        kwargs.setdefault('confidence', self.confidence)
        return BranchyNet(layers, input_shape=self.input_shape, **kwargs)
