"""Early-exit routing: which exit classifies each sample of a batch.

Every inference path (Chainer, the compiled fast path, ONNX Runtime) hands
its per-exit work to these functions as ``steps`` (see ``exit_steps``), so
all paths decide identically.
"""
import math

import chainer
import numpy

from branchynet.measures import confidence
from branchynet.measures.timing import NULL_TIMER
from branchynet.validation import InvalidValue

#: The exit (and label) routing gives a sample whose logits are not finite;
#: ``check_finite`` turns it into an error naming the samples.
NOT_FINITE = -1


class NonFiniteLogits(InvalidValue):
    """Some samples' logits are NaN or infinite, so no exit can classify them."""


def check_finite(exits):
    """Raise ``NonFiniteLogits`` naming the samples that routing marked
    ``NOT_FINITE`` (indices into ``exits``); return ``exits`` otherwise."""
    bad = chainer.backends.cuda.to_cpu(exits) == NOT_FINITE
    if bad.any():
        bad = numpy.flatnonzero(bad)
        shown = ', '.join(map(str, bad[:10].tolist())) + (', ...' if len(bad) > 10 else '')
        raise NonFiniteLogits(
            'the logits of {} of {} samples are not finite (NaN or infinite), so no exit can '
            'classify them: sample indices {}; check those inputs for huge or non-finite '
            'values'.format(len(bad), len(exits), shown))
    return exits


def exit_steps(segments, heads):
    """Per exit, ``step(h, timer) -> (h, logits)`` from separate trunk segment
    and head functions (arrays to arrays), timed as 'trunk' and 'head'."""
    def step(segment, head):
        def run(h, timer):
            with timer.stage('trunk'):
                h = segment(h)
            with timer.stage('head'):
                return h, head(h)
        return run
    return [step(s, h) for s, h in zip(segments, heads)]


def route_batch(steps, x, thresholds, xp, timer=NULL_TIMER, measure='entropy'):
    """Early-exit inference of one device batch (paper Fig. 2, batched).

    ``steps[i](h, timer)`` runs trunk segment i and exit head i and returns
    ``(activation, logits)`` (see ``exit_steps``). At every exit the samples
    whose uncertainty score is strictly below the exit's limit leave with
    the arg-max label (for the default entropy measure: softmax entropy
    below the threshold); the others continue from the cached trunk
    activation. Scores are computed from the logits in float64
    (``confidence.entropy_from_logits`` and friends). Returns device arrays
    (labels, 0-based exit indices); a sample whose logits at an exit it
    reaches are not finite gets ``NOT_FINITE`` for both (see ``check_finite``).
    """
    last = len(steps) - 1
    measure = confidence.get_measure(measure)
    limits = [measure.limit(t) for t in thresholds]
    if len(x) == 1:  # the latency case: one row, decided in plain Python
        h = x
        for i, step in enumerate(steps):
            h, z = step(h, timer)
            with timer.stage('decision'):
                row = z[0].tolist()
                if not all(map(math.isfinite, row)):
                    return (numpy.array([NOT_FINITE], dtype=numpy.int32),
                            numpy.array([NOT_FINITE], dtype=numpy.int32))
                if i == last or measure.row_score(row) < limits[i]:
                    return (numpy.array([row.index(max(row))], dtype=numpy.int32),
                            numpy.array([i], dtype=numpy.int32))
    n = len(x)
    labels = xp.empty(n, dtype=numpy.int32)
    exits = xp.empty(n, dtype=numpy.int32)
    remaining = xp.arange(n)
    h = x
    for i, step in enumerate(steps):
        h, z = step(h, timer)
        with timer.stage('decision'):
            pred = z.argmax(axis=1).astype(numpy.int32)
            bad = ~xp.isfinite(z).all(axis=1)
            exit_id = xp.where(bad, NOT_FINITE, i).astype(numpy.int32)
            pred[bad] = NOT_FINITE
            if i == last:
                labels[remaining] = pred
                exits[remaining] = exit_id
                break
            leave = (measure.scores(z) < limits[i]) | bad
            labels[remaining[leave]] = pred[leave]
            exits[remaining[leave]] = exit_id[leave]
            stay = ~leave
            if not bool(stay.any()):
                break
            h = h[stay]
            remaining = remaining[stay]
    return labels, exits


def leaving_by_share(ent, shares, n, size):
    """Which of the samples reaching early exit ``n`` leave there by share: the
    ``shares`` fraction of them (a list: ``shares[n]`` of the whole batch of
    ``size``) with the lowest softmax entropy ``ent`` (a host array; ties in
    order). A boolean mask over ``ent``."""
    count = int(shares[n] * size) if isinstance(shares, list) else int(shares * len(ent))
    leave = numpy.zeros(len(ent), dtype=bool)
    leave[numpy.argsort(ent, kind='stable')[:min(count, len(ent))]] = True
    return leave


def route_batch_by_share(steps, x, shares, xp):
    """Early exit by shares instead of thresholds (the original's fallback
    when no thresholds were set): each early exit classifies the ``shares``
    fraction of the samples reaching it with the lowest softmax entropy; a
    list gives one fraction of the whole batch per early exit. Returns host
    int32 arrays (labels, exits)."""
    size, last = len(x), len(steps) - 1
    labels = numpy.empty(size, numpy.int32)
    exits = numpy.empty(size, numpy.int32)
    remaining = numpy.arange(size)
    h = x
    for n, step in enumerate(steps):
        h, z = step(h, NULL_TIMER)
        pred = chainer.backends.cuda.to_cpu(z.argmax(axis=1)).astype(numpy.int32)
        bad = ~chainer.backends.cuda.to_cpu(xp.isfinite(z).all(axis=1))
        if n == last:
            labels[remaining], exits[remaining] = pred, n
            labels[remaining[bad]] = exits[remaining[bad]] = NOT_FINITE
            break
        ent = chainer.backends.cuda.to_cpu(confidence.entropy_from_logits(z))
        leave = leaving_by_share(ent, shares, n, size)
        labels[remaining[leave]], exits[remaining[leave]] = pred[leave], n
        leave |= bad  # marked and taken out (their NaN scores sort last)
        labels[remaining[bad]] = exits[remaining[bad]] = NOT_FINITE
        if leave.all():
            break
        stay = ~leave
        h = h[xp.asarray(stay)]
        remaining = remaining[stay]
    return labels, exits
