"""The accuracy/runtime trade-off: the rising curve of Fig. 3 and the knee.

``get_inc_points`` is the original's curve (it lets accuracy dip by
``inc_amt``); ``inc_point_indices`` the strictly rising curve the port
draws; ``choose_knee`` picks the point Table I reports, and says so when no
point is both as accurate as the baseline and faster beyond noise.
"""
import numpy


def inc_point_indices(accs, ms, inc_amt=0.0):
    """Indices of the accuracy-rising curve (Fig. 3), ordered by runtime.

    Walking from the fastest point to the slowest, a point is kept when its
    accuracy exceeds the best accuracy seen so far by more than ``inc_amt``.
    With ``inc_amt=0`` this is the set of points no faster point beats.
    """
    order = sorted(range(len(accs)), key=lambda i: (ms[i], -accs[i]))
    kept, best = [], -numpy.inf
    for i in order:
        if accs[i] > best + inc_amt:
            kept.append(i)
            best = max(best, accs[i])
    return kept


def get_inc_points(accs, diffs, ts, exits, inc_amt=-0.0005):
    """The original's curve points: ``(accs, diffs, ts, exits)`` of the kept points.

    Walking from the fastest point to the slowest, the fastest is kept and
    then every point more accurate than the *last kept* one plus ``inc_amt``;
    the default (-0.0005) lets the curve dip by up to 0.05 points of accuracy.
    ``inc_point_indices`` is the strictly rising variant the port draws.
    """
    if not len(accs):
        raise ValueError('get_inc_points needs at least one point')
    order = numpy.argsort(numpy.asarray(diffs), kind='stable')
    kept = [order[0]]
    for i in order[1:]:
        if accs[i] > accs[kept[-1]] + inc_amt:
            kept.append(i)
    return ([accs[i] for i in kept], [diffs[i] for i in kept], [ts[i] for i in kept],
            [exits[i] for i in kept])


def select_knee(accs, ms, baseline_acc):
    """Index of the knee: the fastest point whose accuracy is at least the
    baseline's. If no point reaches the baseline, the most accurate point
    (the fastest among equals) is returned instead."""
    if not accs:
        raise ValueError('no screened points to choose a knee from')
    good = [i for i in range(len(accs)) if accs[i] >= baseline_acc]
    if good:
        return min(good, key=lambda i: (ms[i], -accs[i]))
    return min(range(len(accs)), key=lambda i: (-accs[i], ms[i]))


NO_GAIN = 'no early-exit gain at baseline accuracy'


def choose_knee(accs, ms, baseline_acc, baseline_ms, min_gain=1.05, tolerance=0.005):
    """The knee, if early exit really pays: a dict ``index, gain, note``.

    The knee is the fastest point at least as accurate as the baseline and
    faster than it beyond measurement noise (predicted time <= baseline time
    / ``min_gain``). When no point qualifies there is no knee
    (``gain=False``, ``note=NO_GAIN``): the point returned is then the fastest
    one within ``tolerance`` (a fraction: 0.005 = half a percentage point)
    of the baseline's accuracy that is faster beyond noise, or, failing that,
    the most accurate point, and the note says which.
    """
    if not accs:
        raise ValueError('no screened points to choose a knee from')
    if not min_gain >= 1 or not tolerance >= 0:
        raise ValueError('min_gain must be >= 1 and tolerance >= 0, got {} and {}'.format(
            min_gain, tolerance))
    fast_enough = [i for i in range(len(accs)) if ms[i] * min_gain <= baseline_ms]

    def fastest(indices):
        return min(indices, key=lambda i: (ms[i], -accs[i]))
    knees = [i for i in fast_enough if accs[i] >= baseline_acc]
    if knees:
        return {'index': fastest(knees), 'gain': True, 'note': ''}
    close = [i for i in fast_enough if accs[i] >= baseline_acc - tolerance]
    if close:
        return {'index': fastest(close), 'gain': False,
                'note': '{}; fastest within {:g} points'.format(NO_GAIN, 100 * tolerance)}
    return {'index': select_knee(accs, ms, float('inf')), 'gain': False,
            'note': '{}; none within {:g} points: most accurate setting'.format(
                NO_GAIN, 100 * tolerance)}
