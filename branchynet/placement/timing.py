"""What each trunk segment and exit head costs on an inference engine.

The engines that matter (numba, the compiled numpy path, ONNX Runtime) run a
segment, its head and the exit decision as one call, so a segment cannot be
timed alone inside a real network. The cost model is therefore read off
whole networks, one per candidate boundary ``b``: the trunk with the
candidate's head at ``b`` and the final exit. On its engine, at the batch
size asked, in interleaved rounds (median of ``repeats``):

* ``E0``: every sample forced out at the head (thresholds: everybody leaves);
* ``E1``: every sample forced on to the final exit (nobody leaves early);
* ``M``: the main network alone (``main_route``).

Then ``head[b] = E1 - M`` (the head and its exit decision) and
``prefix[b] = E0 - head[b]`` (the trunk up to ``b``; made non-decreasing
over the boundaries, as timing noise can make a later prefix look cheaper;
negative values are cut to 0); a segment between two
boundaries costs the difference of their prefixes. A network with exits at
``p_1 < ... < p_k`` is predicted to cost ``prefix[p_i] + head[p_1] + ... +
head[p_i]`` for a sample leaving at exit ``i`` and ``M + sum(head)`` for one
reaching the end. ``check_additivity`` builds a few such networks for real
and compares every exit's forced time with this sum.

One network per boundary costs one compilation per boundary: on the numba
path about a minute each for B-ResNet-110 (its 48 candidates would take most
of an hour). On numba, from ``SHARED_FROM`` boundaries on (``method='auto'``), the
model is instead read off one network with every candidate's head
(``method='shared'``) and each head alone:

* ``F[n]``: every sample forced out at the ``n``-th head of the shared
  network (it runs the trunk to ``b_n`` and heads ``1..n``);
* ``M``: the main network (the shared network's ``main_route``);
* ``head[b]``: the head at ``b`` as a network of its own, run on the
  trunk's activations at ``b`` (the numba path compiles one per distinct
  head shape), in calls of ``HEAD_BATCH`` samples on one thread, so
  that the call's own time (a few µs) is spread over them, as a head
  inside a network has no call of its own.

Then ``prefix[b_n] = F[n] - (head[b_1] + ... + head[b_n])``, made
non-decreasing as above. This is for numba at batch size 1 (heads alone run
on one thread). A head alone leaves out its exit decision (the measure's
score of the logits), which the prefixes beyond it absorb (the final exit's
``M + sum(head)`` does not: it is low by one decision per exit), and pays
what it does not inside the network (copying its input in, an argmax);
its weights stay in cache. ``check_additivity`` measures what that leaves.
"""
import copy
import time

import chainer
import numpy

from branchynet.links import Branch
from branchynet.measures import confidence
from branchynet.net import BranchyNet
from branchynet.progress import Progress
from branchynet.validation import InvalidValue

ENGINES = ('numba', 'fast', 'onnx', 'chainer')
#: How the cost model is measured: one network per boundary, or one shared
#: network and each head alone (see the module).
METHODS = ('auto', 'per_point', 'shared')
#: ``method='auto'`` shares one network from this many boundaries on (numba).
SHARED_FROM = 9
#: Samples per call when a head is timed alone on numba.
HEAD_BATCH = 32


def check_engine_name(name):
    if name not in ENGINES:
        raise InvalidValue('engine must be one of {}, got {!r}'.format(', '.join(ENGINES), name))
    return name


def make_engine(net, name):
    """``net`` compiled for the engine called ``name`` (``ENGINES``); numba
    falls back to the fast path where it cannot compile (said on stdout)."""
    check_engine_name(name)
    if name == 'numba':
        from branchynet.engines.numba import compile_engine
        return compile_engine(net)
    if name == 'fast':
        from branchynet.engines.fast import FastBranchyNet
        return FastBranchyNet(net)
    if name == 'onnx':
        from branchynet.engines.onnx_runtime import OnnxBranchyNet
        return OnnxBranchyNet(net)
    return net.chainer_engine()


def forced(net, n):
    """Thresholds that send every sample out at exit ``n``."""
    m = confidence.get_measure(net.confidence)
    early = net.numexits() - 1
    return [m.stay_all] * n + [m.leave_all] * (early - n)


def _one_pass(engine, run, x, batchsize):
    """ms per sample of ``run(device batch)`` over ``x`` in batches."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        start = time.perf_counter()
        for i in range(0, len(x), batchsize):
            run(engine.send(x[i:i + batchsize]))
        return 1000. * (time.perf_counter() - start) / len(x)


def time_settings(engine, runs, x, batchsize=1, repeats=3, warmup=10):
    """``{name: median ms per sample}`` of the ``runs`` (``{name: run}``),
    after ``warmup`` samples each, in ``repeats`` interleaved rounds."""
    for run in runs.values():
        _one_pass(engine, run, x[:warmup], batchsize)
    passes = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            passes[name].append(_one_pass(engine, run, x, batchsize))
    return {name: float(numpy.median(v)) for name, v in passes.items()}


def time_exits(engine, net, x, batchsize=1, repeats=3):
    """``(forced ms per exit, main ms)`` of ``net`` on ``engine``: each exit's
    cost with every sample forced out there, and the main network's."""
    runs = {n: (lambda xb, ts=forced(net, n): engine.route(xb, ts))
            for n in range(net.numexits())}
    runs['main'] = engine.main_route
    t = time_settings(engine, runs, x, batchsize, repeats)
    return [t[n] for n in range(net.numexits())], t['main']


class CostModel:
    """Per-boundary prefix and head times (ms per sample) and the main
    network's, on one engine at one batch size, measured by ``method``
    (``'per_point'``: a head's time includes its exit decision; ``'shared'``:
    not, the later prefixes hold it)."""

    def __init__(self, prefix_ms, head_ms, main_ms, engine='', batchsize=1, method='per_point'):
        self.prefix_ms = {int(k): float(v) for k, v in prefix_ms.items()}
        self.head_ms = {int(k): float(v) for k, v in head_ms.items()}
        self.main_ms = float(main_ms)
        self.engine, self.batchsize, self.method = engine, batchsize, method

    def path_ms(self, points):
        """Predicted ms of a sample leaving at each exit of a network with
        exits at ``points`` (sorted), the final one last."""
        out, heads = [], 0.
        for p in points:
            heads += self.head_ms[p]
            out.append(self.prefix_ms[p] + heads)
        return out + [self.main_ms + heads]

    def as_dict(self):
        return {'prefix_ms': self.prefix_ms, 'head_ms': self.head_ms, 'main_ms': self.main_ms,
                'engine': self.engine, 'batchsize': self.batchsize, 'method': self.method}


def check_method(name):
    if name not in METHODS:
        raise InvalidValue('cost model method must be one of {}, got {!r}'.format(
            ', '.join(METHODS), name))
    return name


def chosen_method(method, n_points, engine='numba', batchsize=1):
    """``'per_point'`` or ``'shared'``: what ``method`` means for ``n_points``
    boundaries on ``engine`` at ``batchsize``. Only numba compiles each
    network for long, and its heads alone are timed as at batch size 1
    (one thread), so ``'shared'`` is for numba at batch size 1."""
    check_method(method)
    fits = engine == 'numba' and batchsize == 1
    if method == 'shared' and not fits:
        raise InvalidValue("cost_model='shared' times each head alone on numba at batch size "
                           "1; got engine {!r} at batch size {}: use 'per_point' or 'auto'".format(
                               engine, batchsize))
    if method != 'auto':
        return method
    return 'shared' if fits and n_points >= SHARED_FROM else 'per_point'


def _non_decreasing(prefix):
    """The trunk up to a later boundary costs no less: timing noise evened out."""
    running = 0.
    for p in sorted(prefix):
        running = prefix[p] = max(running, prefix[p])
    return prefix


def shared_prefixes(points, forced_ms, head_ms):
    """``{b_n: F[n] - (head[b_1] + ... + head[b_n])}``, cut at 0 and made
    non-decreasing: the prefixes of a shared network whose exit ``n`` (at
    ``points[n]``, increasing) costs ``forced_ms[n]`` forced (the final exit's
    time may follow), given each head's own time ``head_ms[b]``."""
    points = list(points)
    if points != sorted(set(points)) or len(forced_ms) < len(points):
        raise InvalidValue('points must increase and have a forced time each, got {} points '
                           'and {} times'.format(len(points), len(forced_ms)))
    prefix, heads = {}, 0.
    for p, f in zip(points, forced_ms):
        heads += head_ms[p]
        prefix[p] = max(0., f - heads)
    return _non_decreasing(prefix)


def _time_head(trunk, point, links, x, repeats):
    """ms per sample of the head ``links`` alone on numba, as a network of its
    own run on the trunk's activations at ``point`` for ``x``, on one thread
    in calls of ``HEAD_BATCH`` samples (inside a network a head costs its
    own work per sample and no call of its own)."""
    from branchynet.engines.numba import NumbaBranchyNet
    feats = numpy.concatenate([f[0] for f in trunk.features(x, [point])])
    net = BranchyNet([Branch([copy.deepcopy(link) for link in links])],
                     input_shape=feats.shape[1:])
    eng = NumbaBranchyNet(net, threads=1)
    return time_settings(eng, {'head': eng.main_route}, feats, HEAD_BATCH, repeats)['head']


def measure_cost_model(trunk, points, heads, x, engine='numba', batchsize=1, repeats=3,
                       progress=None, method='auto'):
    """A ``CostModel`` for ``points`` (sorted; ``heads[i]``: the links of the
    head at ``points[i]``), measured on ``x`` (a few hundred samples), one
    network per boundary or shared (``method``, see the module; the model's
    ``method`` says which was used: a shared network falls back to one per
    boundary where numba cannot run it or a head alone, or where a head
    starts with layers the trunk computes for it, ``BranchyNet.shared_prefix``)."""
    check_engine_name(engine)
    if chosen_method(method, len(points), engine, batchsize) == 'shared':
        model = _shared_cost_model(trunk, points, heads, x, repeats, progress)
        if model is not None:
            return model
    prefix, head, mains = {}, {}, []
    with Progress.auto(len(points), 'time segments ({})'.format(engine), 'net',
                       progress) as bar:
        for p, links in zip(points, heads):
            net = trunk.build([p], [links])
            eng = make_engine(net, engine)
            (e0, e1), m = time_exits(eng, net, x, batchsize, repeats)
            head[p] = max(0., e1 - m)
            prefix[p] = max(0., e0 - head[p])
            mains.append(m)
            bar.update(1)
    return CostModel(_non_decreasing(prefix), head, float(numpy.median(mains)), engine,
                     batchsize, 'per_point')


def _shared_cost_model(trunk, points, heads, x, repeats, progress):
    """The shared network's ``CostModel`` on numba at batch size 1, or None
    where it cannot be measured that way."""
    from branchynet.engines.numba import NotCompilable, NumbaBranchyNet
    net = trunk.build(list(points), list(heads))
    if any(net.shared_prefix[:-1]):
        return None
    head = {}
    try:
        with Progress.auto(len(points) + 1, 'time segments (numba, shared)', 'net',
                           progress) as bar:
            eng = NumbaBranchyNet(net)
            forced_ms, main_ms = time_exits(eng, net, x, 1, repeats)
            bar.update(1)
            for p, links in zip(points, heads):
                head[p] = _time_head(trunk, p, links, x, repeats)
                bar.update(1)
    except (ImportError, NotCompilable):
        return None
    return CostModel(shared_prefixes(points, forced_ms, head), head, main_ms, 'numba', 1,
                     'shared')


def check_additivity(trunk, model, configs, heads, x, repeats=3, progress=None):
    """Per configuration (a sorted list of boundaries; ``heads[b]`` the links
    at ``b``): the network built for real and every exit's forced time
    measured beside the cost model's sum. Returns a list of dicts with
    ``points``, ``predicted_ms``, ``measured_ms`` and ``max_rel_error``."""
    rows = []
    with Progress.auto(len(configs), 'check additivity', 'net', progress) as bar:
        for pts in configs:
            net = trunk.build(list(pts), [heads[p] for p in pts])
            eng = make_engine(net, model.engine)
            measured, _ = time_exits(eng, net, x, model.batchsize, repeats)
            predicted = model.path_ms(list(pts))
            err = max(abs(p - m) / m for p, m in zip(predicted, measured) if m > 0)
            rows.append({'points': list(pts), 'predicted_ms': predicted,
                         'measured_ms': measured, 'max_rel_error': float(err)})
            bar.update(1)
    return rows
