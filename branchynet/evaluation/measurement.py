"""Batch-1 measurement: what a sample really costs, end to end.

Every function here runs the samples one at a time through an inference
engine (``branchynet.engines.base``) and times everything a sample costs:
host-to-device transfer, trunk, heads, softmax, confidence score, routing
and reading the answer back, with device synchronisation.

``time_settings`` is the timing protocol of the driver's Table I: a warm-up,
then R rounds, each a full pass of every setting in turn (baseline and
BranchyNet interleaved), so that a drift of the machine (another process,
the clock frequency) touches every setting alike. Each setting's result is
the median of its R passes, with the fastest and slowest kept beside it and
every pass recorded. ``measure_main``/``measure_branchy`` time one setting.
"""
import collections
import time

import chainer
import numpy

from branchynet.engines.base import as_engine
from branchynet.progress import Progress
from branchynet.engines.routing import check_finite
from branchynet.measures.timing import NULL_TIMER, StageTimer, synchronize
from branchynet.validation import validate_inputs, validate_labels

#: Samples every setting runs untimed before the first timed round.
WARMUP_SAMPLES = 100


def per_sample_loop(engine, x, run_one, timer, clock=None, progress=None):
    """Run ``run_one`` on every sample at batch size 1; time it end to end.

    The clock covers everything a sample costs: host-to-device transfer, the
    trunk, the heads, softmax, entropy, routing and reading the answer back.
    Returns ``(labels, exits, seconds)``. ``clock``: the time source in
    seconds (default ``time.perf_counter``; tests pass a fake one).
    ``progress``: a ``progress.Progress`` advanced once per sample (a
    counter and a clock read; it redraws at most twice a second).
    """
    clock = clock or time.perf_counter
    n = len(x)
    labels = numpy.empty(n, numpy.int32)
    exits = numpy.empty(n, numpy.int32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        synchronize(engine.xp)
        start = clock()
        for i in range(n):
            lab, ex = run_one(engine.send(x[i:i + 1]), timer)
            labels[i] = int(lab[0])
            exits[i] = int(ex[0])
            if progress is not None:
                progress.update()
        synchronize(engine.xp)
        seconds = clock() - start
    check_finite(exits)
    return labels, exits, seconds


#: One timed setting: ``run_one(device_batch, timer) -> (labels, exits)`` on
#: ``engine``; ``staged``: the per-stage clock runs too (trunk-only time).
Setting = collections.namedtuple('Setting', 'name net engine run_one thresholds staged')


def main_setting(name, net, engine=None, staged=False):
    """The main network alone (the baseline) on ``engine`` (default Chainer)."""
    engine = as_engine(net, engine)
    return Setting(name, net, engine, engine.main_route, None, staged)


def branchy_setting(name, net, thresholds, engine=None, staged=False):
    """Early exit with ``thresholds`` (checked against the confidence
    measure's bounds) on ``engine`` (default Chainer)."""
    engine = as_engine(net, engine)
    ts = net.resolve_thresholds(thresholds)
    return Setting(name, net, engine, lambda xb, tm: engine.route(xb, ts, tm), list(ts), staged)


def time_settings(settings, x, y, repeats=1, warmup=WARMUP_SAMPLES, clock=None):
    """Time every setting ``repeats`` times over all of ``x``, round by round.

    First each setting runs the first ``warmup`` samples untimed (caches,
    allocators, lazily built kernels). Then round r runs every setting in
    the order given, each a full batch-1 pass over ``x``. Returns
    ``{name: result}``; a result holds ``acc``, ``exit_counts``,
    ``exit_accs`` (from the first pass), ``ms`` (the median of the passes,
    per sample), ``ms_range`` ``[fastest, slowest]``, ``ms_repeats`` (every
    pass), ``repeats`` and, for a branchy setting, ``thresholds``.

    A ``staged`` setting also gives ``trunk_ms`` (with ``trunk_ms_range``,
    ``trunk_ms_repeats``) and ``stage_ms``: the trunk segments alone, as the
    original timed. They come from the same passes as ``ms``, the per-stage
    clock running inside the end-to-end one, so a pass's trunk time is a part
    of its end-to-end time and can never exceed it; as each pass dominates
    its own trunk time, so do the median, fastest and slowest. The price: the
    per-stage clock's own cost (two clock reads per stage, on a GPU a
    synchronisation) is inside that setting's end-to-end time.
    """
    clock = clock or time.perf_counter
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise ValueError('setting names must differ, got {}'.format(names))
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError('repeats must be a positive integer, got {!r}'.format(repeats))
    for s in settings:
        validate_inputs(x, s.net.input_shape)
        validate_labels(y, len(x), s.net.num_classes(x))
        if s.staged and not getattr(s.engine, 'stage_timing', True):
            raise ValueError('{} runs each segment and head as one fused call and cannot time '
                             'the trunk alone: pass trunk_only=False'.format(
                                 type(s.engine).__name__))

    bar = Progress.auto(len(settings) * (min(warmup, len(x)) + repeats * len(x)),
                        'batch-1 timing', 'sample')

    def one_pass(s, samples):
        timer = StageTimer(s.engine.xp, clock) if s.staged else NULL_TIMER
        labels, exits, seconds = per_sample_loop(s.engine, samples, s.run_one, timer, clock,
                                                 progress=bar)
        return labels, exits, seconds, timer

    if warmup:
        for s in settings:
            one_pass(s, x[:warmup])
    passes = {name: [] for name in names}
    for _ in range(repeats):
        for s in settings:
            passes[s.name].append(one_pass(s, x))
    bar.close()
    return {s.name: _result(s, y, passes[s.name]) for s in settings}


def _result(setting, y, passes):
    n = len(y)
    labels, exits, _, _ = passes[0]
    result = _summarise(setting.net, y, labels, exits)
    result.update(_spread('ms', [1000. * p[2] / n for p in passes]))
    result['repeats'] = len(passes)
    if setting.staged:
        result.update(_spread('trunk_ms', [1000. * p[3].totals['trunk'] / n for p in passes]))
        stages = sorted({k for p in passes for k in p[3].totals})
        result['stage_ms'] = {k: float(numpy.median([1000. * p[3].totals[k] / n
                                                     for p in passes])) for k in stages}
    if setting.thresholds is not None:
        result['thresholds'] = list(setting.thresholds)
    return result


def _spread(key, values):
    """``key`` (the median), ``key_range`` (fastest, slowest), ``key_repeats``."""
    return {key: float(numpy.median(values)), key + '_range': [min(values), max(values)],
            key + '_repeats': list(values)}


def _one(setting, x, y, repeats, warmup):
    return time_settings([setting], x, y, repeats=repeats, warmup=warmup)[setting.name]


def measure_branchy(net, x, y, thresholds, engine=None, trunk_only=True, repeats=1, warmup=0):
    """Batch-1 early-exit run over ``x``: accuracy, exits and per-sample time.

    Returns a dict with ``acc``, ``exit_counts``, ``exit_accs``, ``ms``
    (end to end, per sample) and ``thresholds``; with ``trunk_only``,
    ``trunk_ms`` is the trunk segments alone, the way the original timed (no
    heads, softmax, entropy or routing), clocked inside the same pass (see
    ``time_settings``, which also says what ``repeats`` and ``warmup`` do).
    ``engine`` is the inference path: ``net`` itself (Chainer, the default)
    or another engine, e.g. a ``engines.fast.FastBranchyNet``.
    """
    return _one(branchy_setting('branchy', net, thresholds, engine, trunk_only),
                x, y, repeats, warmup)


def measure_main(net, x, y, engine=None, trunk_only=True, repeats=1, warmup=0):
    """Batch-1 run of the main network alone (the baseline); as ``measure_branchy``."""
    return _one(main_setting('main', net, engine, trunk_only), x, y, repeats, warmup)


def _summarise(net, y, labels, exits):
    y = chainer.backends.cuda.to_cpu(y)
    correct = labels == y
    counts = numpy.bincount(exits, minlength=net.numexits())
    return {
        'acc': float(correct.mean()),
        'exit_counts': counts.tolist(),
        'exit_accs': [float(correct[exits == n].mean()) if counts[n] else None
                      for n in range(net.numexits())],
    }
