"""Exit heads sized by a multiply-add budget, and their training on a frozen trunk.

The head family, for an activation of shape ``(C, H, W)`` and ``k`` classes
(every member is made of layers every inference engine compiles: max
pooling, ReLU, convolution, linear):

* ``'pool-linear'``: max pooling down to at most 4 x 4, then ``Linear``;
* ``'linear'``: ``Linear`` on the activation as it is;
* ``'conv-pool-linear'``: a 3 x 3 convolution to ``min(C, 32)`` channels,
  ReLU, max pooling to at most 4 x 4, ``Linear`` (B-LeNet's own exit-1
  head has this shape).

For a flat ``(D,)`` activation: ``'linear'`` and ``'mlp'`` (``Linear(D,
min(D, 64))``, ReLU, ``Linear``). ``make_head`` with ``kind='auto'`` takes
the member with the most multiply-adds within ``budget`` times the MACs the
exit saves (the rest of the trunk and the final head); when none fits, the
cheapest.

``train_heads`` trains heads on the trunk's activations at their boundaries
and never changes the trunk: the activations are computed in test mode
(batch normalisation reads its population statistics and updates nothing)
without a graph, and only the heads' parameters are in the optimizer. Every
sample of ``x`` is used in every epoch. The activations of as many samples
as fit in ``cache_bytes`` (all of them where they fit) are computed once and
kept in memory; those of the rest are recomputed batch by batch in every
epoch (streamed: the same values, at the price of a trunk pass per batch per
epoch). The cache never holds more than ``cache_bytes``.
"""
import math

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.links import FL
from branchynet.links.cpukernels import run_layer
from branchynet.placement.trunk import count_macs
from branchynet.progress import Progress
from branchynet.optimizers import Adam
from branchynet.validation import InvalidValue, as_labels, validate_inputs

KINDS = ('auto', 'pool-linear', 'linear', 'conv-pool-linear', 'mlp')
#: default share of the MACs an exit saves that its head may cost
HEAD_BUDGET = 0.25
#: default memory for cached activations (bytes)
CACHE_BYTES = 1 << 30


def _pool_to(h, w, size=4):
    """The max-pooling window (= stride) that brings ``h x w`` to at most
    ``size x size`` (None when it is that small already)."""
    k = max(int(math.ceil(h / size)), int(math.ceil(w / size)))
    return k if k > 1 else None


def _pooled(h, w, k):
    # Chainer's cover_all=True output size with pad 0, stride = window
    return (h + k - 1) // k, (w + k - 1) // k


def family(shape, classes):
    """``{kind: builder}`` of the head family for an activation of one
    sample's ``shape``: ``builder()`` returns a fresh list of links."""
    shape = tuple(shape)
    if len(shape) == 1 or (len(shape) == 3 and shape[1] == shape[2] == 1):
        d = int(numpy.prod(shape))
        hidden = min(d, 64)
        return {'linear': lambda: [L.Linear(d, classes)],
                'mlp': lambda: [L.Linear(d, hidden), FL(F.relu), L.Linear(hidden, classes)]}
    if len(shape) != 3:
        raise InvalidValue('a head can attach to (C, H, W) or (D,) activations, got shape '
                           '{}'.format(shape))
    c, h, w = shape
    k = _pool_to(h, w)
    ph, pw = _pooled(h, w, k) if k else (h, w)
    c2 = min(c, 32)

    def pool():
        return [FL(F.max_pooling_2d, k, k)] if k else []

    return {
        'pool-linear': lambda: pool() + [L.Linear(c * ph * pw, classes)],
        'linear': lambda: [L.Linear(c * h * w, classes)],
        'conv-pool-linear': lambda: [L.Convolution2D(c, c2, 3, pad=1), FL(F.relu)] + pool() +
        [L.Linear(c2 * ph * pw, classes)],
    }


def head_macs(links, shape):
    return count_macs(links, numpy.zeros((1,) + tuple(shape), numpy.float32))[0]


def make_head(shape, classes, saved_macs, budget=HEAD_BUDGET, kind='auto'):
    """``(kind, links, macs)``: a fresh head for an activation of ``shape``.

    ``kind='auto'``: the family member with the most MACs within ``budget *
    saved_macs``, else the cheapest; or a kind of ``KINDS`` by name."""
    members = family(shape, classes)
    if kind != 'auto':
        if kind not in members:
            raise InvalidValue('head kind {!r} does not fit an activation of shape {}: one of '
                               '{}, or auto'.format(kind, tuple(shape), ', '.join(members)))
        links = members[kind]()
        return kind, links, head_macs(links, shape)
    priced = []
    for name, build in members.items():
        links = build()
        priced.append((head_macs(links, shape), name, links))
    priced.sort(key=lambda t: t[0])
    fitting = [p for p in priced if p[0] <= budget * saved_macs]
    macs, name, links = fitting[-1] if fitting else priced[0]
    return name, links, macs


def check_kind(kind):
    if not callable(kind) and kind not in KINDS:
        raise InvalidValue('heads must be one of {} or a function (shape, classes) -> list of '
                           'links, got {!r}'.format(', '.join(KINDS), kind))


def feature_bytes(trunk, points):
    """Bytes of one sample's (float32) activations at ``points``."""
    shapes = trunk.describe()['shapes']
    return 4 * sum(int(numpy.prod(shapes[p])) for p in points)


def cached_sample_count(trunk, points, n, cache_bytes=CACHE_BYTES):
    """How many of ``n`` samples' activations at ``points`` fit in ``cache_bytes``."""
    per = max(1, feature_bytes(trunk, points))
    return n if n * per <= cache_bytes else max(0, min(n, int(cache_bytes // per)))


def feature_plan(n, n_cached):
    """How ``train_heads`` gets the activations of ``n`` samples of which
    ``n_cached`` fit in the cache: ``'cached'``, ``'streamed'`` or
    ``'cached and streamed'``."""
    if n_cached >= n:
        return 'cached'
    return 'cached and streamed' if n_cached else 'streamed'


def _cache(trunk, points, x, batchsize=256):
    """The activations of ``x`` at ``points``, one array per point, filled
    batch by batch (the memory held is the arrays and one batch)."""
    shapes = trunk.describe()['shapes']
    feats = [numpy.empty((len(x),) + tuple(shapes[p]), numpy.float32) for p in points]
    for i, part in zip(range(0, len(x), batchsize), trunk.features(x, points, batchsize)):
        for f, a in zip(feats, part):
            f[i:i + len(a)] = a
    return feats


def train_heads(trunk, points, heads, x, y, epochs=3, batchsize=128, alpha=1e-3, seed=0,
                cache_bytes=CACHE_BYTES, progress=None, desc='train heads'):
    """Train ``heads`` (one list of links per boundary of ``points``) on the
    frozen trunk's activations of ``x``; the trunk is never changed.

    Every sample is used in every epoch. The activations of the first
    ``cached_sample_count(...)`` samples (all where they fit in
    ``cache_bytes``) are computed once and cached; the others' are computed
    again for each batch (streamed).

    Returns ``{'loss': [[per head] per epoch], 'acc': [...], 'cached': bool
    (all samples cached), 'features': 'cached' | 'streamed' | 'cached and
    streamed', 'cached_samples', 'streamed_samples', 'cache_nbytes' (the
    cache's size, <= cache_bytes), 'seen': [samples per epoch, every head]}``
    (training loss and accuracy, means over each epoch)."""
    validate_inputs(x, trunk.input_shape)
    y = as_labels(y, len(x))
    classes = trunk.describe()['classes']
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise InvalidValue('labels must lie in 0..{} (the network has {} classes), got {} to '
                           '{}'.format(classes - 1, classes, int(y.min()), int(y.max())))
    chains = [chainer.Sequential(*links) for links in heads]
    model = chainer.ChainList(*chains)
    optimizer = Adam(alpha=alpha)
    optimizer.setup(model)
    n_cached = cached_sample_count(trunk, points, len(x), cache_bytes)
    feats = _cache(trunk, points, x[:n_cached])
    rng = numpy.random.RandomState(seed)
    history = {'loss': [], 'acc': [], 'cached': n_cached == len(x),
               'features': feature_plan(len(x), n_cached), 'cached_samples': n_cached,
               'streamed_samples': len(x) - n_cached,
               'cache_nbytes': int(sum(f.nbytes for f in feats)), 'seen': []}
    steps = epochs * int(math.ceil(len(x) / batchsize))
    with Progress.auto(steps, desc, 'batch', progress) as bar:
        for _ in range(epochs):
            order = rng.permutation(len(x))
            sums, count = numpy.zeros((2, len(heads))), 0
            for i in range(0, len(x), batchsize):
                idx = numpy.sort(order[i:i + batchsize])
                hs = _batch(trunk, points, feats, x, idx, n_cached)
                t = y[idx]
                with chainer.using_config('train', True):
                    losses, accs = [], []
                    for links, h in zip(heads, hs):
                        z = _run_head(links, h)
                        losses.append(F.softmax_cross_entropy(z, t))
                        accs.append(F.accuracy(z, t))
                    total = sum(losses)
                model.cleargrads()
                total.backward()
                optimizer.update()
                sums += len(idx) * numpy.array([[float(v.array) for v in losses],
                                                [float(v.array) for v in accs]])
                count += len(idx)
                bar.update(1, loss=round(float(total.array), 3))
            history['loss'].append((sums[0] / max(1, count)).tolist())
            history['acc'].append((sums[1] / max(1, count)).tolist())
            history['seen'].append(count)
    return history


def _run_head(links, h):
    """A head's links in turn on ``h``, on the CPU training kernels where they apply."""
    for link in links:
        h = run_layer(link, h)
    return h


def _batch(trunk, points, feats, x, idx, n_cached):
    """The activations at ``points`` of the samples ``idx`` (sorted): from
    the cache for those below ``n_cached``, computed for the others, in the
    order of ``idx``."""
    cut = int(numpy.searchsorted(idx, n_cached))
    if cut == len(idx):
        return [f[idx] for f in feats]
    streamed = trunk.batch_features(x[idx[cut:]], points)
    if cut == 0:
        return streamed
    return [numpy.concatenate([f[idx[:cut]], a]) for f, a in zip(feats, streamed)]


def head_logits(trunk, points, heads, x, batchsize=256):
    """``(logits per head, final logits)``: every head's and the final
    classifier's logits on ``x`` (test mode), one trunk pass per batch."""
    outs = [[] for _ in range(len(points) + 1)]
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for i in range(0, len(x), batchsize):
            feats = trunk.batch_features(x[i:i + batchsize], points, final=True)
            for n, (links, h) in enumerate(zip(heads, feats)):
                for link in links:
                    h = link(h)
                outs[n].append(chainer.as_array(h))
            outs[-1].append(feats[-1])
    logits = [numpy.concatenate(o) for o in outs]
    return logits[:-1], logits[-1]
