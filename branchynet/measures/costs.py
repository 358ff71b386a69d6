"""Per-exit cost accounting: multiply-adds and parameters of every trunk
segment and exit head, and the arithmetic limit of an early-exit gain.

Multiply-adds (MACs) count the convolutions and linear layers of one
sample's forward pass (pooling, activations, normalisation and softmax are
not counted: they are a few percent of the arithmetic here). They are
measured by running every segment and head once on a single sample with a
link hook, so any network built from Chainer links is covered.
"""
import chainer
import chainer.links as L
import numpy


class _MacCounter(chainer.LinkHook):
    name = 'MacCounter'

    def __init__(self):
        self.macs = 0

    def forward_postprocess(self, args):
        link, out = args.link, args.out
        if isinstance(link, L.Convolution2D):
            w = link.W.shape  # (out, in / groups, kh, kw)
            self.macs += int(out.size // len(out)) * int(numpy.prod(w[1:]))
        elif isinstance(link, L.Linear):
            self.macs += int(out.size // len(out)) * int(link.W.shape[1])


def count_macs(fn, x):
    """``(multiply-adds per sample, output)`` of ``fn(x)`` run in test mode:
    the convolutions' and linear layers' multiply-adds, the rule of every cost here."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        with _MacCounter() as counter:
            out = fn(x)
    return counter.macs, out


def exit_costs(net, sample=None):
    """Costs of every part of ``net``, per sample.

    Returns a dict with lists indexed by exit: ``segment_macs``,
    ``head_macs``, ``segment_params``, ``head_params``, and ``path_macs``
    (the MACs of a sample that leaves at that exit: every segment up to it,
    plus every head it passed through, its own included) and ``main_macs``
    (the baseline network: the whole trunk and the last head).
    """
    if sample is None:
        if net.input_shape is None:
            raise ValueError('pass a sample: the network has no input_shape')
        sample = numpy.zeros((1,) + tuple(net.input_shape), numpy.float32)
    h = net.send(sample[:1])
    seg_macs, head_macs, seg_params, head_params = [], [], [], []
    for n in range(net.numexits()):
        start, end = net.segment_bounds(n)
        macs, h = count_macs(lambda v: net.trunk(v, start, end), h)
        seg_macs.append(macs)
        seg_params.append(sum(link.count_params() for link in net.trunk[start:end]))
        macs, _ = count_macs(lambda v, n=n: net.head(v, n), h)
        head_macs.append(macs)
        head_params.append(net.branches[n].count_params())
    path = [sum(seg_macs[:n + 1]) + sum(head_macs[:n + 1]) for n in range(len(seg_macs))]
    return {'segment_macs': seg_macs, 'head_macs': head_macs, 'segment_params': seg_params,
            'head_params': head_params, 'path_macs': path,
            'main_macs': sum(seg_macs) + head_macs[-1]}


def expected_cost(path_costs, exit_fractions):
    """Mean per-sample cost given the fraction of samples leaving at each exit."""
    return float(numpy.dot(path_costs, exit_fractions))


def arithmetic_limit_gain(costs, exit_counts):
    """Baseline MACs / expected BranchyNet MACs for the given exit counts: the
    gain a runtime with no per-call overhead would reach."""
    fractions = numpy.asarray(exit_counts, dtype=float) / sum(exit_counts)
    return costs['main_macs'] / expected_cost(costs['path_macs'], fractions)
