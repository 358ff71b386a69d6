"""Random valid BranchyNets for differential tests of the inference engines.

A network is described by a ``Spec`` (plain tuples, so hypothesis shrinks it
and ``to_code`` prints it as the Python that builds it); ``build`` turns it
into a ``BranchyNet`` with non-trivial weights: random biases and
BatchNormalization statistics, so a folding or bias bug changes the answers.
``specs()`` is the hypothesis strategy and ``spec_for(index)`` the fixed
network number ``index`` (drawn by the same code from
``numpy.random.RandomState(index)``); shapes are tracked while drawing, so
every spatial size stays >= 1 and every ``Linear`` gets the right input size.

``check_engine`` is the differential check: the engine either refuses the
network when built (its documented refusal type, naming the layer), or its
``predict`` gives ``net.predict``'s labels and exits, its ``predict_main``
gives ``net.predict_main``'s, and its per-exit logits are within
``RTOL``/``ATOL_SCALE`` of the network's.

Layer tuples (``Spec.items``; ``('exit', head)`` marks an early exit):

* ``('conv', out, ksize, stride, pad, bias)``, ``('bn',)``, ``('relu',)``,
  ``('tanh',)``, ``('sigmoid',)``, ``('dropout',)``,
  ``('max', ksize, stride, pad, cover_all)`` (stride None: the window),
  ``('avg', ksize, stride, pad)``, ``('lrn', n)``,
  ``('sl', test)`` (``SL(FL(F.dropout), test)``, test None, 'fn' or 'link':
  identity, ``F.relu`` or ``FL(F.relu)`` at test time),
  ``('res', out, stride)`` (``networks.resnet_cifar10.ResBlock``),
  ``('bottleneck', ch)`` (``branchynet.links.resnet.BottleNeckB``),
  ``('linear', out, lazy, bias)`` (lazy: ``L.Linear(None, out)``).
"""
import math
from dataclasses import dataclass

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
from hypothesis import assume, strategies as st

from branchynet import FL, SL, Branch, BranchyNet
from branchynet.measures import confidence

#: Logit tolerance: |engine - net| <= RTOL * |net| + ATOL_SCALE * max |net logits of
#: that exit|. Float32 throughout; the engines sum in other orders and fold
#: BatchNormalization into the weights, so the last few bits differ, and the error
#: grows with the largest activation, not with each logit.
RTOL = 1e-4
ATOL_SCALE = 1e-4
#: Bugs the generator steers around until they are fixed (each has its own
#: regression test in tests/engines/test_engine_regressions.py); remove an entry with its fix:
#:
#: * 'empty-segment': a trunk segment that computes nothing (two exits at one
#:   point, an exit as the very first layer or just before the final one, a head
#:   sharing every layer up to the next exit, a segment of only ``SL(..., None)``)
#:   makes ``net.predict`` itself fail (test_two_exits_at_one_point and friends);
#: * 'bn-after-linear': BatchNormalization of a Linear's (N, K) output breaks the
#:   fast path (test_fast_batchnorm_after_linear).
KNOWN_BUGS = set()

MEASURES = tuple(confidence.MEASURES)


@dataclass(frozen=True)
class Spec:
    """One network and the run that checks it."""
    input_shape: tuple   # (C, H, W)
    classes: int
    items: tuple         # layer tuples and ('exit', head) markers; the final head is ``head``
    head: tuple          # the final exit's head
    measure: str = 'entropy'
    seed: int = 0        # weights and data
    batch: int = 16      # samples
    batchsize: object = None  # the engines' and predict's batchsize argument
    quantiles: tuple = ()     # per early exit: the share of its arrivals that leaves

    def early_exits(self):
        return sum(1 for it in self.items if it[0] == 'exit')


# ---------------------------------------------------------------- shapes
def out_size(size, k, s, p, cover_all=False):
    if cover_all:
        return (size + 2 * p - k + s - 1) // s + 1
    return (size + 2 * p - k) // s + 1


def next_shape(layer, shape):
    """The activation shape after ``layer``: (C, H, W), or (N,) after a Linear."""
    kind = layer[0]
    if kind == 'conv':
        _, out, k, s, p, _ = layer
        return out, out_size(shape[1], k, s, p), out_size(shape[2], k, s, p)
    if kind in ('max', 'avg'):
        k, s, p = layer[1:4]
        s = k if s is None else s
        cover = layer[4] if kind == 'max' else False
        return shape[0], out_size(shape[1], k, s, p, cover), out_size(shape[2], k, s, p, cover)
    if kind == 'res':
        _, out, s = layer
        return out, (shape[1] - 1) // s + 1, (shape[2] - 1) // s + 1
    if kind == 'linear':
        return (layer[1],)
    return shape


def flat_size(shape):
    return int(numpy.prod(shape))


# ---------------------------------------------------------------- building
def make_link(layer, shape):
    """The Chainer link of ``layer`` reading activations of ``shape``."""
    kind = layer[0]
    if kind == 'conv':
        _, out, k, s, p, bias = layer
        return L.Convolution2D(shape[0], out, k, stride=s, pad=p, nobias=not bias)
    if kind == 'bn':
        return L.BatchNormalization(shape[0])
    if kind in ('relu', 'tanh', 'sigmoid', 'dropout'):
        return FL(getattr(F, kind))
    if kind == 'max':
        _, k, s, p, cover = layer
        return FL(F.max_pooling_2d, k, s, p, cover)
    if kind == 'avg':
        _, k, s, p = layer
        return FL(F.average_pooling_2d, k, s, p)
    if kind == 'lrn':
        return FL(F.local_response_normalization, layer[1])
    if kind == 'sl':
        test = {None: None, 'fn': F.relu, 'link': FL(F.relu)}[layer[1]]
        return SL(FL(F.dropout), test)
    if kind == 'res':
        from networks.resnet_cifar10 import ResBlock
        return ResBlock(shape[0], layer[1], stride=layer[2])
    if kind == 'bottleneck':
        from branchynet.links.resnet import BottleNeckB
        return BottleNeckB(shape[0], layer[1])
    if kind == 'linear':
        _, out, lazy, bias = layer
        return L.Linear(None if lazy else flat_size(shape), out, nobias=not bias)
    raise ValueError('unknown layer {!r}'.format(layer))


def randomize(net, rng):
    """Random biases and BatchNormalization parameters and statistics (the
    initial ones, zeros and ones, would hide folding bugs)."""
    for link in net.links():
        if isinstance(link, L.BatchNormalization):
            c = link.avg_mean.shape
            link.gamma.array[...] = rng.uniform(0.5, 1.5, c)
            link.beta.array[...] = rng.uniform(-0.5, 0.5, c)
            link.avg_mean[...] = rng.uniform(-0.5, 0.5, c)
            link.avg_var[...] = rng.uniform(0.3, 2.0, c)
        elif isinstance(link, (L.Convolution2D, L.Linear)) and link.b is not None:
            link.b.array[...] = rng.uniform(-0.3, 0.3, link.b.shape)


def build(spec):
    """The ``BranchyNet`` of ``spec`` (weights drawn from ``spec.seed``)."""
    numpy.random.seed(spec.seed)  # Chainer's initialisers draw from numpy.random
    network, shape = [], tuple(spec.input_shape)

    def head_links(head, shape):
        links = []
        for layer in head:
            links.append(make_link(layer, shape))
            shape = next_shape(layer, shape)
        return links

    for item in spec.items:
        if item[0] == 'exit':
            network.append(Branch(head_links(item[1], shape)))
        else:
            network.append(make_link(item, shape))
            shape = next_shape(item, shape)
    network.append(Branch(head_links(spec.head, shape)))
    net = BranchyNet(network, input_shape=spec.input_shape, confidence=spec.measure)
    randomize(net, numpy.random.RandomState(spec.seed + 1))
    return net


def inputs(spec):
    rng = numpy.random.RandomState(spec.seed + 2)
    return rng.randn(spec.batch, *spec.input_shape).astype(numpy.float32)


# ---------------------------------------------------------------- printing
def layer_code(layer, shape):
    """Python source of ``layer`` reading activations of ``shape``."""
    kind = layer[0]
    if kind == 'conv':
        _, out, k, s, p, bias = layer
        return 'L.Convolution2D({}, {}, {}, stride={}, pad={}{})'.format(
            shape[0], out, k, s, p, '' if bias else ', nobias=True')
    if kind == 'bn':
        return 'L.BatchNormalization({})'.format(shape[0])
    if kind in ('relu', 'tanh', 'sigmoid', 'dropout'):
        return 'FL(F.{})'.format(kind)
    if kind == 'max':
        return 'FL(F.max_pooling_2d, {}, {}, {}, {})'.format(*layer[1:])
    if kind == 'avg':
        return 'FL(F.average_pooling_2d, {}, {}, {})'.format(*layer[1:])
    if kind == 'lrn':
        return 'FL(F.local_response_normalization, {})'.format(layer[1])
    if kind == 'sl':
        return 'SL(FL(F.dropout), {})'.format(
            {None: 'None', 'fn': 'F.relu', 'link': 'FL(F.relu)'}[layer[1]])
    if kind == 'res':
        return 'ResBlock({}, {}, stride={})'.format(shape[0], layer[1], layer[2])
    if kind == 'bottleneck':
        return 'BottleNeckB({}, {})'.format(shape[0], layer[1])
    if kind == 'linear':
        _, out, lazy, bias = layer
        return 'L.Linear({}, {}{})'.format('None' if lazy else flat_size(shape), out,
                                           '' if bias else ', nobias=True')
    raise ValueError(layer)


def to_code(spec):
    """The network list of ``spec`` as Python source (for reports and
    regression tests)."""
    lines, shape = [], tuple(spec.input_shape)

    def head(h, shape):
        parts = []
        for layer in h:
            parts.append(layer_code(layer, shape))
            shape = next_shape(layer, shape)
        return 'Branch([{}])'.format(', '.join(parts))

    for item in spec.items:
        if item[0] == 'exit':
            lines.append(head(item[1], shape))
        else:
            lines.append(layer_code(item, shape))
            shape = next_shape(item, shape)
    lines.append(head(spec.head, shape))
    return ('BranchyNet([\n    ' + ',\n    '.join(lines) +
            '], input_shape={}, confidence={!r})'.format(tuple(spec.input_shape), spec.measure))


# ---------------------------------------------------------------- strategy
class _HypothesisDraws:
    """The drawing primitives of ``_draw_spec`` on hypothesis (``specs``)."""

    def __init__(self, draw):
        self._draw = draw

    def integer(self, lo, hi):
        return self._draw(st.integers(lo, hi))

    def choice(self, options):
        return self._draw(st.sampled_from(options))

    def boolean(self):
        return self._draw(st.booleans())

    def real(self, lo, hi):
        return self._draw(st.floats(lo, hi))

    def integers(self, lo, hi, size, unique=False):
        return self._draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size,
                                   unique=unique))

    def require(self, condition):
        assume(condition)


class _Rejected(Exception):
    """A draw ``_draw_spec`` rejects (``require``): ``spec_for`` draws again."""


class _NumpyDraws:
    """The same primitives on a ``numpy.random.RandomState`` (``spec_for``)."""

    def __init__(self, rng):
        self.rng = rng

    def integer(self, lo, hi):
        return int(self.rng.randint(lo, hi + 1))

    def choice(self, options):
        return options[self.rng.randint(len(options))]

    def boolean(self):
        return bool(self.rng.randint(2))

    def real(self, lo, hi):
        return float(self.rng.uniform(lo, hi))

    def integers(self, lo, hi, size, unique=False):
        if unique:
            return [int(v) for v in self.rng.choice(numpy.arange(lo, hi + 1), size,
                                                    replace=False)]
        return [int(v) for v in self.rng.randint(lo, hi + 1, size)]

    def require(self, condition):
        if not condition:
            raise _Rejected


def _spatial_layer(draw, shape, trunk):
    """One layer for a (C, H, W) activation, valid for its size."""
    c, h, w = shape
    kinds = ['conv', 'conv', 'conv', 'bn', 'relu', 'relu', 'max', 'max', 'avg', 'dropout',
             'linear']
    if trunk:
        kinds += ['lrn', 'sl', 'res', 'tanh', 'sigmoid', 'bottleneck']
    kind = draw.choice(kinds)
    if kind == 'conv':
        pad = draw.integer(0, 3)
        kmax = min(5, h + 2 * pad, w + 2 * pad)
        k = draw.integer(1, kmax)
        return ('conv', draw.integer(1, 6), k, draw.integer(1, 2), pad, draw.boolean())
    if kind in ('max', 'avg'):
        k = draw.integer(1, min(3, h, w))
        pad = draw.integer(0, k // 2)
        stride = draw.choice([None, 1, 2, 3])
        cover = kind == 'max' and draw.boolean()
        if not all(_windows_inside(n, k, stride or k, pad, cover) for n in (h, w)):
            pad, cover = 0, False
        return ('max', k, stride, pad, cover) if kind == 'max' else ('avg', k, stride, pad)
    if kind == 'lrn':
        return ('lrn', draw.choice([3, 5, 4]))
    if kind == 'sl':
        return ('sl', draw.choice([None, 'fn', 'link']))
    if kind == 'res':
        return ('res', draw.integer(c, c + 3), draw.integer(1, 2))
    if kind == 'bottleneck':
        return ('bottleneck', draw.integer(1, 4))
    if kind == 'linear':
        return ('linear', draw.integer(2, 12), draw.boolean(), draw.boolean())
    return (kind,)


def _windows_inside(size, k, s, p, cover_all):
    """Whether every pooling window covers at least one input element (a
    window all padding gives -inf in Chainer's max pooling)."""
    last = out_size(size, k, s, p, cover_all) - 1
    return p <= k - 1 and last * s - p <= size - 1


def _flat_layer(draw, trunk):
    bn = [] if 'bn-after-linear' in KNOWN_BUGS else ['bn']
    kind = draw.choice(['linear', 'linear', 'relu', 'dropout'] + bn +
                       (['tanh'] if trunk else []))
    if kind == 'linear':
        return ('linear', draw.integer(2, 12), draw.boolean(), draw.boolean())
    return (kind,)


def _layer(draw, shape, trunk):
    return _flat_layer(draw, trunk) if len(shape) == 1 else _spatial_layer(draw, shape, trunk)


SHAREABLE = ('relu', 'tanh', 'sigmoid', 'max', 'avg', 'lrn')


def _head(draw, shape, classes, following):
    """1-3 layers ending in Linear(classes); it may start with the trunk's
    next layers (``following``) when those are shareable functions."""
    layers = []
    for layer in following[:2]:
        if layer[0] in SHAREABLE and draw.integer(0, 2) == 0:
            layers.append(layer)
        else:
            break
    extra = draw.integer(0, 2 - len(layers))
    for layer in layers:
        shape = next_shape(layer, shape)
    for _ in range(extra):
        layer = _layer(draw, shape, trunk=False)
        layers.append(layer)
        shape = next_shape(layer, shape)
    layers.append(('linear', classes, draw.boolean(), draw.boolean()))
    return tuple(layers)


def _draw_spec(draw, empty_segments=None, max_exits=3, max_layers=8, batch=(1, 70),
               measures=MEASURES):
    """A random valid ``Spec`` from the primitives of ``draw``
    (``_HypothesisDraws`` or ``_NumpyDraws``)."""
    empty = 'empty-segment' not in KNOWN_BUGS if empty_segments is None else empty_segments
    c = draw.integer(1, 3)
    h = draw.integer(6, 32)
    w = h if draw.boolean() else draw.integer(6, 32)
    classes = draw.integer(2, 6)
    exits = draw.integer(1, max_exits)
    depth = draw.integer(1 if empty else exits + 1, max_layers)
    trunk, shape = [], (c, h, w)
    shapes = [shape]
    for _ in range(depth):
        layer = _layer(draw, shape, trunk=True)
        trunk.append(layer)
        shape = next_shape(layer, shape)
        shapes.append(shape)
    if empty:
        points = sorted(draw.integers(0, depth, exits))
    else:
        points = sorted(draw.integers(1, depth - 1, exits, unique=True))
    items = []
    for i in range(depth + 1):
        for _ in range(points.count(i)):
            # a head may share the trunk's layers up to the next exit
            nxt = min([p for p in points if p > i] + [depth])
            following = trunk[i:nxt]
            items.append(('exit', _head(draw, shapes[i], classes, following)))
        if i < depth:
            items.append(trunk[i])
    if not empty:
        draw.require(all(_computes(seg) for seg in segments(items)))
    return Spec(input_shape=(c, h, w), classes=classes, items=tuple(items),
                head=_head(draw, shapes[-1], classes, []),
                measure=draw.choice(measures),
                seed=draw.integer(0, 2 ** 16),
                # a few samples per exit: every exit can get some
                batch=draw.integer(max(batch[0], 3 * (exits + 1)),
                                   max(batch[1], 3 * (exits + 1))),
                batchsize=draw.choice([None, None, None, 1, 4]),
                quantiles=tuple(draw.real(0.15, 0.85) for _ in range(exits)))


@st.composite
def specs(draw, **options):
    """The hypothesis strategy of random valid ``Spec``s: 1-3 early exits
    anywhere in a trunk of up to ``max_layers`` layers, inputs of 1-3
    channels and 6-32 pixels (options: ``_draw_spec``'s)."""
    return _draw_spec(_HypothesisDraws(draw), **options)


def spec_for(index, **options):
    """The ``index``-th fixed network: ``_draw_spec`` on
    ``numpy.random.RandomState(index)`` (a rejected draw is drawn again from
    the same generator), so it depends on ``index`` alone, never on the test
    that uses it (hypothesis seeds its draws from the test function)."""
    rng = numpy.random.RandomState(index)
    for _ in range(1000):
        try:
            return _draw_spec(_NumpyDraws(rng), **options)
        except _Rejected:
            continue
    raise RuntimeError('no valid network drawn for index {}'.format(index))


def segments(items):
    """The trunk segments of a network list, as ``BranchyNet`` cuts them: a
    head's leading layers equal to the trunk's next ones run in the trunk."""
    trunk, points, heads = [], [], []
    for item in items:
        if item[0] == 'exit':
            points.append(len(trunk))
            heads.append(item[1])
        else:
            trunk.append(item)
    out, start = [], 0
    for i, (p, head) in enumerate(zip(points, heads)):
        limit = (points[i + 1] if i + 1 < len(points) else len(trunk)) - p
        k = 0
        while k < min(limit, len(head)) and head[k][0] in SHAREABLE and head[k] == trunk[p + k]:
            k += 1
        out.append(trunk[start:p + k])
        start = p + k
    out.append(trunk[start:])
    return out


def _computes(segment):
    """Whether a segment has a layer that is not the identity at test time."""
    return any(layer != ('sl', None) for layer in segment)


# ---------------------------------------------------------------- thresholds
def thresholds_for(net, logits, quantiles):
    """Per early exit, a threshold between two of the actual scores there, so
    that about ``quantiles[i]`` of the samples reaching exit i leave there, but
    at least one, and at least one stays for each later exit. Among the cuts
    near that share, one is taken where the samples leaving include one whose
    label is no tie, and the cut lies in a gap wider than the scores' rounding
    tolerance on both sides, so the samples there are compared, not dropped
    as ties (``unstable_samples``). Where no gap is that wide (scores that
    differ less than their tolerance), nobody leaves there, so the later
    exits still get samples. Returns ``(thresholds, unsplit)``: the early exits
    where nobody leaves for that reason."""
    measure = confidence.get_measure(net.confidence)
    reach = numpy.ones(len(logits[0]), bool)
    early = len(logits) - 1
    ts, unsplit = [], []
    for i, (z, q) in enumerate(zip(logits[:-1], quantiles)):
        order = numpy.argsort(measure.scores(z[reach]), kind='stable')
        scores = measure.scores(z[reach])[order]
        tol = score_tolerance(z)[reach][order]
        labelled = ~tie_mask(z)[reach][order]  # a label that can be compared
        m, later = len(scores), early - i  # later: exits after this one, the last included
        if m <= later:  # too few samples to share: nobody leaves here
            limit = scores[0] - 1.0 if m else 0.0
        else:
            want = min(max(int(round(q * m)), 1), m - later)
            cuts = sorted(range(1, m - later + 1), key=lambda k: abs(k - want))
            clear = [k for k in cuts if scores[k] - scores[k - 1] > tol[k] + tol[k - 1]]
            good = [k for k in clear if labelled[:k].any()]
            if good or clear:
                k = (good or clear)[0]  # k samples leave: those with the k lowest scores
                limit = 0.5 * (scores[k - 1] + scores[k])
            else:
                limit = scores[0] - 2 * tol[0] - 1e-6
                unsplit.append(i)
        t = limit if measure.upper is None else 1.0 - limit
        t = min(max(t, 0.0), measure.upper if measure.upper is not None else math.inf)
        ts.append(float(t))
        reach &= ~(measure.scores(z) < measure.limit(ts[-1]))
    return ts, tuple(unsplit)


# ---------------------------------------------------------------- the check
def logit_tolerance(z):
    """Per-sample absolute tolerance of logits ``z`` (see ``RTOL``)."""
    return RTOL * numpy.abs(z).max(axis=1) + ATOL_SCALE * numpy.abs(z).max()


def score_tolerance(z):
    """Per sample, how far its confidence score may move when its logits
    ``z`` move within ``logit_tolerance``: at most (2 + 2 log K) times the
    largest logit change."""
    return 2 * (1 + math.log(z.shape[1])) * 2 * logit_tolerance(z)


def unstable_samples(net, logits, ts):
    """Samples whose exit or label a rounding within the tolerance could
    change: at an exit they reach, the score is within ``score_tol`` of the
    limit, or at the exit they leave, the two largest logits are within the
    tolerance of each other. A limit at or below the measure's floor (its
    "nobody leaves" limit: no score, entropy or 1 - probability, is ever
    below it) makes no score near it unstable: nobody can leave there.
    Returns a boolean mask."""
    measure = confidence.get_measure(net.confidence)
    floor = measure.limit(measure.stay_all)
    n = len(logits[0])
    unstable = numpy.zeros(n, bool)
    reach = numpy.ones(n, bool)
    last = len(logits) - 1
    for i, z in enumerate(logits):
        tol = logit_tolerance(z)
        top2 = numpy.sort(z, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) <= 2 * tol
        if i == last:
            unstable |= reach & tie
            break
        score_tol = score_tolerance(z)
        scores = measure.scores(z)
        limit = measure.limit(ts[i])
        if limit > floor:
            unstable |= reach & (numpy.abs(scores - limit) <= score_tol)
        leave = reach & (scores < limit)
        unstable |= leave & tie
        reach &= ~leave
    return unstable


def layer_names(net):
    """Names a refusal may give: link class names and FL/SL function names."""
    names = set()
    for link in net.links():
        names.add(type(link).__name__)
        for fn in (getattr(link, 'fn', None), getattr(link, 'fnTest', None)):
            if fn is not None:
                names.add(getattr(fn, '__name__', type(fn).__name__))
    return names - {'BranchyNet', 'Net', 'ChainList', 'Branch'}


@dataclass
class Outcome:
    refused: str = ''      # the refusal message, when the engine refused
    samples: int = 0       # samples compared
    unstable: int = 0      # samples left out as ties (unstable_samples)
    exits: tuple = ()      # compared samples per exit (net.predict's exits)
    unsplit: tuple = ()    # early exits nobody leaves: their scores differ by less than
    #                        the rounding tolerance (``thresholds_for``)
    exact_ties: int = 0    # of ``unstable``: samples whose two largest logits at the exit
    #                        net.predict gives them are equal (no label to ask for: a
    #                        property of the weights drawn, e.g. a dead ReLU layer)
    tied_exits: tuple = ()  # exits every sample net.predict sends to is such a tie


def check_engine(make_engine, refusals, net, x, quantiles=None, ts=None, batchsize=None,
                 compare_logits=True):
    """The differential check of one engine on one network (see module doc).

    ``make_engine(net)`` builds the engine; ``refusals`` the exception types it
    documents for a network it cannot run. Thresholds: ``ts``, or chosen from
    the network's scores by ``quantiles``. Raises AssertionError on a mismatch;
    returns an ``Outcome``.
    """
    with chainer.using_config('train', False):
        logits = net.get_logits(x)  # also initialises lazy Linear layers
    unsplit = ()
    if ts is None:
        ts, unsplit = thresholds_for(net, logits, quantiles)
    try:
        engine = make_engine(net)
    except refusals as e:
        names = [n for n in layer_names(net) if n in str(e)]
        assert names, 'refusal does not name a layer of the network: {}'.format(e)
        return Outcome(refused=str(e))
    unstable = unstable_samples(net, logits, ts)
    ok = ~unstable
    exp_labels, exp_exits = net.predict(x, ts, batchsize=batchsize)
    labels, exits = engine.predict(x, ts, batchsize=batchsize)
    bad = numpy.flatnonzero(ok & ((labels != exp_labels) | (exits != exp_exits)))
    assert len(bad) == 0, '{} of {} stable samples differ: samples {}, exits {} vs {}, ' \
        'labels {} vs {}'.format(len(bad), ok.sum(), bad[:8], exits[bad[:8]],
                                 exp_exits[bad[:8]], labels[bad[:8]], exp_labels[bad[:8]])
    main_ok = ~tie_mask(logits[-1])
    main = engine.predict_main(x, batchsize=batchsize)
    bad = numpy.flatnonzero(main_ok & (main != net.predict_main(x, batchsize=batchsize)))
    assert len(bad) == 0, 'predict_main differs on samples {}'.format(bad[:8])
    if compare_logits:
        # at the default batch size: issue 21's regression tests keep the
        # exit_logits bug of smaller batches (test_engine_regressions.py)
        for i, (z, ze) in enumerate(zip(logits, engine.exit_logits(x))):
            err = numpy.abs(ze - z) - logit_tolerance(z)[:, None]
            assert (err <= 0).all(), 'exit {} logits differ by up to {:.3g} beyond the ' \
                'tolerance (largest |logit| {:.3g})'.format(i, err.max(), numpy.abs(z).max())
    top2 = numpy.sort(numpy.stack(logits)[exp_exits, numpy.arange(len(x))], axis=1)[:, -2:]
    exact = top2[:, 0] == top2[:, 1]
    return Outcome(samples=int(ok.sum()), unstable=int(unstable.sum()),
                   exits=tuple(int((exp_exits[ok] == i).sum()) for i in range(len(logits))),
                   unsplit=unsplit, exact_ties=int((unstable & exact).sum()),
                   tied_exits=tuple(i for i in range(len(logits)) if (exp_exits == i).any()
                                    and exact[exp_exits == i].all()))


def tie_mask(z):
    """Samples whose two largest logits are within the tolerance."""
    top2 = numpy.sort(z, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= 2 * logit_tolerance(z)
