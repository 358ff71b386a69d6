"""Batch-1 measurement: what a sample really costs, end to end.

Every function here runs the samples one at a time through an inference
engine (``branchynet.engine``) and times everything a sample costs:
host-to-device transfer, trunk, heads, softmax, confidence score, routing
and reading the answer back, with device synchronisation. A second pass with
per-stage clocks gives the trunk-only time the original reported.
"""
import time

import chainer
import numpy

from branchynet.engine import as_engine
from branchynet.progress import Progress
from branchynet.timing import NULL_TIMER, StageTimer, synchronize
from branchynet.validation import validate_inputs, validate_labels


def per_sample_loop(engine, x, run_one, timer, progress=None):
    """Run ``run_one`` on every sample at batch size 1; time it end to end.

    The clock covers everything a sample costs: host-to-device transfer, the
    trunk, the heads, softmax, entropy, routing and reading the answer back.
    ``progress``: a ``progress.Progress`` advanced once per sample (a
    counter and a clock read; it redraws at most twice a second).
    """
    n = len(x)
    labels = numpy.empty(n, numpy.int32)
    exits = numpy.empty(n, numpy.int32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        synchronize(engine.xp)
        start = time.perf_counter()
        for i in range(n):
            lab, ex = run_one(engine.send(x[i:i + 1]), timer)
            labels[i] = int(lab[0])
            exits[i] = int(ex[0])
            if progress is not None:
                progress.update()
        synchronize(engine.xp)
        seconds = time.perf_counter() - start
    return labels, exits, seconds


def _measure(net, engine, x, y, run_one, trunk_only):
    validate_inputs(x, net.input_shape)
    validate_labels(y, len(x), net.num_classes(x))
    if trunk_only and not getattr(engine, 'stage_timing', True):
        raise ValueError('{} runs each segment and head as one fused call and cannot time '
                         'the trunk alone: pass trunk_only=False'.format(type(engine).__name__))
    bar = Progress.auto(len(x) * (2 if trunk_only else 1), 'batch-1 timing', 'sample')
    labels, exits, seconds = per_sample_loop(engine, x, run_one, NULL_TIMER, progress=bar)
    result = _summarise(net, y, labels, exits, seconds)
    if trunk_only:  # a second pass with per-stage clocks: the original's timer
        timer = StageTimer(engine.xp)
        per_sample_loop(engine, x, run_one, timer, progress=bar)
        result['trunk_ms'] = 1000. * timer.totals['trunk'] / len(y)
        result['stage_ms'] = {k: 1000. * v / len(y) for k, v in timer.totals.items()}
    bar.close()
    return result


def measure_branchy(net, x, y, thresholds, engine=None, trunk_only=True):
    """Batch-1 early-exit run over ``x``: accuracy, exits and per-sample time.

    Returns a dict with ``acc``, ``exit_counts``, ``exit_accs`` and ``ms``
    (end to end, per sample, timed with no per-stage clock in the way). With
    ``trunk_only``, a second pass times the stages separately: ``trunk_ms``
    is the trunk segments alone, the way the original timed (no heads,
    softmax, entropy or routing). ``engine`` is the inference path: ``net``
    itself (Chainer, the default) or a ``fastpath.FastBranchyNet``.
    """
    engine = as_engine(net, engine)
    ts = net.resolve_thresholds(thresholds)  # within the confidence measure's bounds
    result = _measure(net, engine, x, y, lambda xb, tm: engine.route(xb, ts, tm), trunk_only)
    result['thresholds'] = list(ts)
    return result


def measure_main(net, x, y, engine=None, trunk_only=True):
    """Batch-1 run of the main network alone (the baseline); as ``measure_branchy``."""
    engine = as_engine(net, engine)
    return _measure(net, engine, x, y, engine.main_route, trunk_only)


def _summarise(net, y, labels, exits, seconds):
    y = chainer.backends.cuda.to_cpu(y)
    correct = labels == y
    counts = numpy.bincount(exits, minlength=net.numexits())
    return {
        'acc': float(correct.mean()),
        'exit_counts': counts.tolist(),
        'exit_accs': [float(correct[exits == n].mean()) if counts[n] else None
                      for n in range(net.numexits())],
        'ms': 1000. * seconds / len(y),
    }
