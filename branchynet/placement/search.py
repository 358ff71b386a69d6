"""Candidate boundaries, fixed-fraction baselines and the choice of exits.

``candidate_points``: every layer boundary whose share of the main network's
multiply-adds lies in ``[min_share, max_share]`` (by default 2 % to 90 %);
with ``distinct=True`` only the last boundary of a run of boundaries with
the same MACs is kept (after a convolution's ReLU and pooling, not between
them: the same trunk work, a smaller activation for the head).

``fixed_fraction_points``: the SDN placement (Kaya et al., ICML 2019): an
exit at 15, 30, 45, 60, 75 and 90 % of the MACs (the candidate nearest each).

``choose``: every set of at most ``k`` candidates, exhaustively while
there are at most ``EXHAUSTIVE_SETS`` such sets (and for ``k`` <= 2 however
many there are); beyond, every set of at most ``exhaustive_depth`` exits,
then greedily from the best of those, adding the exit that helps most, up
to ``k``. Each set is priced by the project's calibration
(``evaluation.calibration.calibrate_thresholds``) as inner solver on the
probe heads' held-out outputs and the cost model's path times: the set with
the least expected time reaching ``target_acc`` (or, with ``budget``, the
most accurate within it). The empty set (no early exit) is one of the sets.
"""
import itertools
import math

import numpy

from branchynet.evaluation.calibration import calibrate_thresholds
from branchynet.progress import Progress
from branchynet.validation import InvalidValue, is_real_number

SDN_FRACTIONS = (0.15, 0.30, 0.45, 0.60, 0.75, 0.90)
#: the most exit sets ``choose`` prices one by one for ``k`` > 2 (each costs a calibration)
EXHAUSTIVE_SETS = 512


def candidate_points(trunk, min_share=0.02, max_share=0.9, distinct=True):
    """Boundaries between ``min_share`` and ``max_share`` of the MACs."""
    for name, v in (('min_share', min_share), ('max_share', max_share)):
        if not is_real_number(v) or not 0 <= v <= 1:
            raise InvalidValue('{} must be a share of the MACs in [0, 1], got {!r}'.format(
                name, v))
    if min_share > max_share:
        raise InvalidValue('min_share ({}) must not exceed max_share ({})'.format(
            min_share, max_share))
    points = [b for b in trunk.boundaries() if min_share <= trunk.share(b) <= max_share]
    if distinct:
        macs = trunk.describe()['macs']
        points = [b for i, b in enumerate(points)
                  if i + 1 == len(points) or macs[points[i + 1]] != macs[b]]
    return points


def fixed_fraction_points(trunk, fractions=SDN_FRACTIONS, among=None):
    """Per fraction, the boundary (of ``among``, default every boundary)
    whose MAC share is nearest; sorted, without repeats."""
    among = list(trunk.boundaries() if among is None else among)
    if not among:
        raise InvalidValue('no boundary to place fixed-fraction exits at')
    shares = numpy.array([trunk.share(b) for b in among])
    return sorted({among[int(numpy.argmin(abs(shares - f)))] for f in fractions})


def _better(a, b, budget):
    """Whether result ``a`` beats ``b`` (dicts with met, acc, ms)."""
    if a['met'] != b['met']:
        return a['met']
    if budget is None:
        key = (lambda r: (r['ms'], -r['acc'])) if a['met'] else (lambda r: (-r['acc'], r['ms']))
    else:
        key = (lambda r: (-r['acc'], r['ms'])) if a['met'] else (lambda r: (r['ms'], -r['acc']))
    return key(a) < key(b)


def evaluate_set(points, outputs, final, y, path_ms, target_acc, budget=None,
                 measure='entropy', candidates=32):
    """One exit set priced: ``outputs[b] = (scores, predictions)`` of the
    probe at each boundary, ``final`` those of the last exit, ``path_ms``
    its exits' predicted times. Returns a dict: ``points``, ``thresholds``,
    ``acc``, ``ms``, ``exit_counts``, ``met``."""
    y = numpy.asarray(y)
    if not points:
        acc = float((final[1] == y).mean())
        ms = float(path_ms[-1])
        met = ms <= budget + 1e-12 if budget is not None else acc >= target_acc - 1e-12
        return {'points': [], 'thresholds': [], 'acc': acc, 'ms': ms,
                'exit_counts': [len(y)], 'met': bool(met)}
    scores = numpy.stack([outputs[p][0] for p in points] + [final[0]], axis=1)
    preds = numpy.stack([outputs[p][1] for p in points] + [final[1]], axis=1)
    r = calibrate_thresholds(scores, preds, y, path_ms, target_acc=None if budget else target_acc,
                             budget=budget, measure=measure, candidates=candidates,
                             progress=False)
    return {'points': list(points), 'thresholds': r['thresholds'], 'acc': r['acc'],
            'ms': r['cost'], 'exit_counts': r['exit_counts'], 'met': bool(r['met'])}


def set_count(n, k):
    """How many sets of at most ``k`` of ``n`` candidates there are (the empty one too)."""
    return sum(math.comb(n, r) for r in range(min(k, n) + 1))


def exhaustive_depth(n, k):
    """The most exits per set ``choose`` tries every set of (at least 2, at most ``k``)."""
    r = min(k, 2)
    while r < min(k, n) and set_count(n, r + 1) <= EXHAUSTIVE_SETS:
        r += 1
    return r


def strategy(n, k):
    """``'exhaustive'`` or ``'greedy'``: how ``choose`` searches ``n`` candidates for ``k``."""
    return 'exhaustive' if exhaustive_depth(n, k) >= min(k, n) else 'greedy'


def best_within(evaluated, size, budget=None):
    """The best of the priced sets (``choose``'s list) with at most ``size`` exits."""
    best = None
    for r in evaluated:
        if len(r['points']) <= size and (best is None or _better(r, best, budget)):
            best = r
    if best is None:
        raise InvalidValue('no priced exit set has at most {} exits'.format(size))
    return best


def choose(points, outputs, final, y, path_ms_of, k=2, target_acc=None, budget=None,
           measure='entropy', candidates=32, progress=None):
    """The best set of at most ``k`` exits among ``points``.

    ``path_ms_of(sorted points)`` gives a set's per-exit times (e.g.
    ``CostModel.path_ms``). ``target_acc`` defaults to the final exit's
    accuracy on ``y``. Returns ``(best, every set evaluated)``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidValue('k must be the most exits to place, a whole number >= 0, got '
                           '{!r}'.format(k))
    if target_acc is not None and budget is not None:
        raise InvalidValue('give target_acc or budget, not both')
    if budget is None and target_acc is None:
        target_acc = float((final[1] == numpy.asarray(y)).mean())
    points = sorted(points)

    def price(pts):
        return evaluate_set(list(pts), outputs, final, y, path_ms_of(list(pts)), target_acc,
                            budget, measure, candidates)

    depth = exhaustive_depth(len(points), k)
    sets = [c for r in range(min(depth, len(points)) + 1)
            for c in itertools.combinations(points, r)]
    evaluated = []
    with Progress.auto(len(sets), 'search exit sets', 'set', progress) as bar:
        for s in sets:
            evaluated.append(price(s))
            bar.update(1)
    if depth < min(k, len(points)):
        # with fewer than depth exits in the best, no larger set beat it: adding stops there
        current = best_within(evaluated, depth, budget)
        steps = (min(k, len(points)) - depth) * len(points)
        with Progress.auto(steps, 'search exit sets (greedy)', 'set', progress) as bar:
            while depth <= len(current['points']) < min(k, len(points)):
                step = [price(sorted(current['points'] + [p])) for p in points
                        if p not in current['points']]
                evaluated.extend(step)
                bar.update(len(step))
                best_step = best_within(step, k, budget)
                if not _better(best_step, current, budget):
                    break
                current = best_step
    best = best_within(evaluated, k, budget)
    for r in evaluated:
        r['target_acc'], r['budget'] = target_acc, budget
    return best, evaluated
