"""Choosing exit thresholds on held-out data, for an accuracy target or a cost budget.

The original swept thresholds on the test set and picked the knee by eye.
``calibrate_thresholds`` instead works on a validation split, from cached
exit outputs (``screening.exit_outputs``) and per-exit costs (milliseconds
from ``screening.path_costs`` or multiply-adds from ``costs.exit_costs``):

* ``target_acc``: the cheapest thresholds whose validation accuracy is at
  least the target (default: the last exit's own validation accuracy, i.e.
  the baseline's);
* ``budget``: the most accurate thresholds whose expected cost is within it.

Candidates per early exit are the quantiles of that exit's validation
scores (so any threshold the data distinguishes can be found, not only a
fixed grid), plus "nobody leaves" and "everybody leaves". With up to two
early exits every combination is evaluated exactly in array operations;
with more, coordinate descent starts from "nobody leaves" and improves one
exit at a time until nothing changes.
"""
import itertools

import numpy
from sklearn.metrics import roc_auc_score, roc_curve

from branchynet import confidence, screening
from branchynet.validation import (InvalidType, InvalidValue, is_real_number,
                                   validate_batchsize, validate_labels, validate_weights)


def _candidate_limits(scores, count, upper):
    """Limits (exit when score < limit) spanning an exit's score distribution."""
    qs = numpy.quantile(scores, numpy.linspace(0, 1, count))
    top = numpy.inf if upper is None else upper
    return numpy.unique(numpy.concatenate([[0.0], qs, [top]]))


def _objective(acc, cost, target_acc, budget):
    """Sort keys (smaller is better) and feasibility for the two goals."""
    if budget is not None:
        feasible = cost <= budget + 1e-12
        return feasible, numpy.lexsort((cost, -acc))
    feasible = acc >= target_acc - 1e-12
    return feasible, numpy.lexsort((-acc, cost))


def _pick(acc, cost, target_acc, budget):
    feasible, order = _objective(acc, cost, target_acc, budget)
    ranked = [i for i in order if feasible[i]]
    if ranked:
        return ranked[0], True
    # nothing meets the goal: the closest (most accurate / cheapest) point
    fallback = numpy.lexsort((cost, -acc)) if budget is None else numpy.lexsort((-acc, cost))
    return int(fallback[0]), False


def calibrate_thresholds(scores, predictions, y, path_costs, target_acc=None, budget=None,
                         measure='entropy', candidates=64, max_rounds=5):
    """Per-early-exit thresholds chosen on validation outputs.

    Args:
        scores, predictions: ``(N, exits)`` from ``screening.exit_outputs``
            on the validation split (scores of ``measure``).
        y: validation labels.
        path_costs: cost of a sample leaving at each exit (ms or MACs).
        target_acc: minimum validation accuracy (default: the last exit's).
        budget: maximum expected cost per sample; if given, accuracy is
            maximised under it instead.
        measure: the confidence measure the scores belong to.
        candidates: quantiles tried per early exit.

    Returns a dict: ``thresholds`` (in the measure's own units), ``acc``,
    ``cost``, ``exit_counts`` on the validation data, ``met`` (whether the
    goal was reachable) and the goal itself.
    """
    if target_acc is not None and budget is not None:
        raise InvalidValue('give target_acc or budget, not both')
    measure = confidence.get_measure(measure)
    scores, predictions, y = check_outputs(scores, predictions, y, min_exits=2)
    early = scores.shape[1] - 1
    path_costs = validate_weights(path_costs, early + 1, 'path_costs')
    validate_batchsize(candidates, 'candidates')
    validate_batchsize(max_rounds, 'max_rounds')
    for name, value, upper in (('target_acc', target_acc, 1.0), ('budget', budget, None)):
        if value is not None and (not is_real_number(value) or not numpy.isfinite(value) or
                                  value < 0 or (upper is not None and value > upper)):
            raise InvalidValue('{} must be a finite number >= 0{}, got {!r}'.format(
                name, '' if upper is None else ' and <= {:g}'.format(upper), value))
    if budget is None and target_acc is None:
        target_acc = float((predictions[:, -1] == y).mean())
    cands = [_candidate_limits(scores[:, n], candidates, measure.upper) for n in range(early)]
    to_user = numpy.vectorize(measure.limit, otypes=[numpy.float64])  # limit is an involution

    def evaluate(limit_vectors):
        ts = to_user(numpy.asarray(limit_vectors, dtype=numpy.float64))
        r = screening.evaluate(scores, predictions, y, ts, path_ms=path_costs,
                               measure=measure)
        return ts, r

    if early <= 2:
        grid = numpy.array(list(itertools.product(*cands)))
        ts, r = evaluate(grid)
        best, met = _pick(r['acc'], r['ms'], target_acc, budget)
    else:
        current = numpy.array([c[0] for c in cands])
        for _ in range(max_rounds):
            changed = False
            for n in range(early):
                trial = numpy.repeat(current[None], len(cands[n]), axis=0)
                trial[:, n] = cands[n]
                _, r = evaluate(trial)
                k, _ = _pick(r['acc'], r['ms'], target_acc, budget)
                if trial[k, n] != current[n]:
                    current, changed = trial[k], True
            if not changed:
                break
        ts, r = evaluate(current[None])
        best = 0
        met = bool(r['acc'][0] >= target_acc - 1e-12) if budget is None \
            else bool(r['ms'][0] <= budget + 1e-12)
    return {'thresholds': [float(v) for v in ts[best]], 'acc': float(r['acc'][best]),
            'cost': float(r['ms'][best]), 'exit_counts': r['exit_counts'][best].tolist(),
            'met': met, 'target_acc': target_acc, 'budget': budget, 'measure': measure.name}


def exit_roc(scores, predictions, y, exit_index=0):
    """How well an exit's uncertainty score tells its right answers from its
    wrong ones: ``(false_positive_rate, true_positive_rate, auroc)`` with a
    sample "detected" when its score is low (scikit-learn's ``roc_curve`` and
    ``roc_auc_score`` on ``-score``). ``auroc`` is None when the exit is right
    on every sample or on none (the curve is then undefined)."""
    scores, predictions, y = check_outputs(scores, predictions, y)
    if isinstance(exit_index, bool) or not isinstance(exit_index, (int, numpy.integer)) or \
            not 0 <= exit_index < scores.shape[1]:
        raise InvalidValue('exit_index must be an exit of these outputs, 0..{}, got {!r}'
                           .format(scores.shape[1] - 1, exit_index))
    scores = scores[:, exit_index]
    correct = predictions[:, exit_index] == y
    if correct.all() or not correct.any():
        return numpy.array([0., 1.]), numpy.array([0., 1.]), None
    fpr, tpr, _ = roc_curve(correct, -scores)
    return fpr, tpr, float(roc_auc_score(correct, -scores))


def exit_aurocs(scores, predictions, y):
    """``exit_roc``'s AUROC for every early exit (the last exit never decides)."""
    scores, predictions, y = check_outputs(scores, predictions, y, min_exits=2)
    return [exit_roc(scores, predictions, y, n)[2] for n in range(scores.shape[1] - 1)]


def check_outputs(scores, predictions, y, min_exits=1):
    """``(scores, predictions, y)`` as arrays, checked: scores and predictions
    ``(N, exits)`` with N >= 1 and at least ``min_exits`` exits, finite
    scores, integer predictions, and one label per sample."""
    scores, predictions, y = (numpy.asarray(a) for a in (scores, predictions, y))
    if scores.ndim != 2 or predictions.shape != scores.shape or not len(scores):
        raise InvalidValue('scores and predictions must both have shape (samples, exits) '
                           'with at least one sample (from screening.exit_outputs), got {} '
                           'and {}'.format(scores.shape, predictions.shape))
    if scores.shape[1] < min_exits:
        raise InvalidValue('these outputs have {} exit(s); at least {} are needed (a '
                           'network with one exit has no early-exit decision)'.format(
                               scores.shape[1], min_exits))
    if scores.dtype.kind not in 'iuf' or not numpy.isfinite(scores).all():
        raise InvalidValue('scores must be finite numbers, got {} with NaN or infinite '
                           'values'.format(scores.dtype) if scores.dtype.kind in 'iuf'
                           else 'scores must be numbers, got {}'.format(scores.dtype))
    if predictions.dtype.kind not in 'iu':
        raise InvalidType('predictions must be integer labels, got {}'.format(
            predictions.dtype))
    validate_labels(y, len(scores), name='y')
    return scores, predictions, y
