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
exit at a time until nothing changes. The thresholds returned never sit on
a validation score: each is moved to the middle of the gap between the
scores either side of it (``_with_margin``), so a sample's exit does not
depend on the last bits of its logits (which differ between batch sizes).

``calibrate(net, x_val, y_val, ...)`` (``BranchyNet.calibrate``) does the
whole job in one call: exit outputs, batch-1 path costs on an engine, the
choice, and sets the thresholds and measure on the model.
"""
import itertools
import warnings

import numpy
from sklearn.metrics import roc_auc_score, roc_curve

from branchynet.evaluation import screening
from branchynet.measures import confidence
from branchynet.progress import Progress
from branchynet.validation import (InvalidType, InvalidValue, brief, is_real_number,
                                   validate_batchsize, validate_inputs, validate_labels,
                                   validate_weights)


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
                         measure='entropy', candidates=64, max_rounds=5, progress=None):
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
        candidates: quantiles tried per early exit (1..``MAX_CANDIDATES``).
        progress: a bar over the threshold vectors evaluated (None: on a
            terminal only).

    Returns a dict: ``thresholds`` (in the measure's own units), ``acc``,
    ``cost``, ``exit_counts`` on the validation data, ``met`` (whether the
    goal was reachable) and the goal itself.

    Margin: every threshold returned lies strictly between two distinct
    validation scores of its exit, at the midpoint (float64) of the largest
    score that leaves there and the smallest that does not, so every
    validation sample keeps a margin of half that gap at every early exit and
    the decisions (and ``acc``, ``cost``, ``exit_counts``) are those of the
    candidate chosen. Where nobody leaves, the threshold is the measure's
    "nobody leaves" value (entropy 0, maxprob/margin 1: no score can pass
    it); where everybody leaves, the candidate chosen (infinite entropy,
    probability 0). Two scores too close to put a value strictly between
    them in the threshold's units (a few units in the last place apart)
    keep the candidate itself.
    """
    if target_acc is not None and budget is not None:
        raise InvalidValue('give target_acc or budget, not both')
    measure = _measure(measure)
    scores, predictions, y = check_outputs(scores, predictions, y, min_exits=2)
    early = scores.shape[1] - 1
    path_costs = validate_weights(path_costs, early + 1, 'path_costs')
    _check_candidates(candidates)
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

    if early <= 2:
        total = int(numpy.prod([len(c) for c in cands]))
    else:
        total = max_rounds * sum(len(c) for c in cands) + 1
    bar = Progress.auto(total, 'calibrate ({})'.format(measure.name), 'pt', progress)

    def evaluate(limit_vectors, chunk=4096):
        limit_vectors = numpy.asarray(limit_vectors, dtype=numpy.float64)
        ts = to_user(limit_vectors)
        parts = []
        for i in range(0, len(ts), chunk):
            parts.append(screening.evaluate(scores, predictions, y, ts[i:i + chunk],
                                            path_ms=path_costs, measure=measure))
            bar.update(len(parts[-1]['acc']))
        r = {k: numpy.concatenate([p[k] for p in parts]) for k in parts[0]}
        return ts, r

    with bar:
        result = _search(cands, evaluate, early, target_acc, budget, max_rounds, measure)
    result['thresholds'] = _with_margin(scores, result['thresholds'], measure)
    return result


def _with_margin(scores, thresholds, measure):
    """``thresholds`` (user units, one per early exit) moved off the scores:
    each to the float64 midpoint between the largest score of its exit that
    leaves (score < limit) and the smallest that stays, so the same samples
    leave at every exit with a margin of half the gap. Nobody leaving: the
    measure's ``stay_all`` (when every score is above its limit); everybody
    leaving: unchanged. A midpoint that does not survive the conversion to
    the user's units strictly inside the gap keeps the threshold given."""
    floor = measure.limit(measure.stay_all)
    moved = []
    for n, t in enumerate(thresholds):
        s = numpy.asarray(scores[:, n], dtype=numpy.float64)
        limit = measure.limit(t)
        below, above = s[s < limit], s[s >= limit]
        if not len(above):  # everybody leaves: above every score already
            moved.append(float(t))
            continue
        hi = float(above.min())
        if not len(below):  # nobody leaves
            moved.append(float(measure.stay_all) if floor < hi else float(t))
            continue
        lo = float(below.max())
        mid = lo + (hi - lo) / 2 if numpy.isfinite(hi - lo) else lo / 2 + hi / 2
        new = float(measure.limit(mid))  # limit is an involution: back to user units
        moved.append(new if lo < measure.limit(new) < hi else float(t))
    return moved


def _search(cands, evaluate, early, target_acc, budget, max_rounds, measure):
    """Every combination (up to two early exits) or coordinate descent."""
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


#: The most quantiles per early exit ``calibrate_thresholds`` tries (with two
#: early exits every pair is evaluated: about a million at this bound).
MAX_CANDIDATES = 1024


def _check_candidates(candidates):
    if isinstance(candidates, bool) or not isinstance(candidates, (int, numpy.integer)) or \
            not 1 <= candidates <= MAX_CANDIDATES:
        raise InvalidValue('candidates must be a positive integer of at most {} (quantiles '
                           'tried per early exit), got {!r}'.format(MAX_CANDIDATES, candidates))


def _measure(measure):
    """The ``confidence.Measure`` named ``measure`` (a name or a Measure)."""
    if not isinstance(measure, (str, confidence.Measure)):
        raise InvalidType('measure must be the name of a confidence measure ({}), got a {}: '
                          '{}'.format(', '.join(confidence.MEASURES), type(measure).__name__,
                                      brief(measure)))
    return confidence.get_measure(measure)


def _check_engine(engine, net):
    """None, the model itself, or an engine: an object with ``route()``."""
    if engine is not None and engine is not net and \
            not callable(getattr(engine, 'route', None)):
        raise InvalidType("engine must be None (the model's own Chainer path) or an inference "
                          'engine built from the model, e.g. engines.fast.FastBranchyNet(net), '
                          'engines.onnx_runtime.OnnxBranchyNet(net) or '
                          'engines.numba.compile_engine(net); got the {} {}'.format(
                              type(engine).__name__, brief(engine)))


def _check_goal(target_acc, budget):
    if target_acc is not None and budget is not None:
        raise InvalidValue('give target_acc or budget, not both')
    if target_acc is not None and not (is_real_number(target_acc) and 0 < target_acc <= 1):
        raise InvalidValue('target_acc must be an accuracy in (0, 1], got {!r}'.format(
            target_acc))
    if budget is not None and not (is_real_number(budget) and 0 < budget < numpy.inf):
        raise InvalidValue('budget must be a positive number of milliseconds per sample, '
                           'got {!r}'.format(budget))


def calibrate(net, x_val, y_val, target_acc=None, budget=None, measure='entropy', engine=None,
              cost_samples=200, candidates=64, progress=None):
    """Choose and set ``net``'s exit thresholds on validation data, in one call.

    Exit outputs of ``x_val`` are computed once; the batch-1 cost of leaving
    at each exit is measured on the first ``cost_samples`` samples on
    ``engine`` (default the model's own Chainer path; any engine of
    ``branchynet.engines.base``); ``calibrate_thresholds`` then picks the cheapest
    thresholds reaching ``target_acc`` (default: the last exit's validation
    accuracy) or, with ``budget`` (ms per sample at batch size 1 on that
    engine), the most accurate within it. ``net.confidence`` becomes
    ``measure`` and ``net.thresholdExits`` the thresholds; on an error the
    model is left as it was.

    Returns ``calibrate_thresholds``'s dict (``thresholds``, ``acc``,
    ``cost`` in ms, ``exit_counts``, ``met``, ...) plus ``path_ms``.
    """
    _check_goal(target_acc, budget)
    measure = _measure(measure).name
    _check_engine(engine, net)
    validate_batchsize(cost_samples, 'cost_samples')
    _check_candidates(candidates)
    validate_inputs(x_val, net.input_shape, name='x_val')
    validate_labels(y_val, len(x_val), net.num_classes(x_val), name='y_val')
    previous = (net.confidence, net.thresholdExits)
    net.thresholdExits = None
    net.confidence = measure  # the forced exits of path_costs follow the net's measure
    try:
        scores, predictions = screening.exit_outputs(net, x_val, measure, progress=progress)
        path_ms = screening.path_costs(net, x_val[:cost_samples], engine, progress=progress)
        result = calibrate_thresholds(scores, predictions, numpy.asarray(y_val), path_ms,
                                      target_acc=target_acc, budget=budget, measure=measure,
                                      candidates=candidates, progress=progress)
        net.thresholdExits = result['thresholds']
    except BaseException:
        net.thresholdExits = None
        net.confidence, net.thresholdExits = previous
        raise
    result['path_ms'] = list(path_ms)
    if not result['met']:
        warnings.warn(unmet_goal(result, len(x_val)), UnmetGoalWarning, stacklevel=3)
    return result


class UnmetGoalWarning(UserWarning):
    """``calibrate`` could not reach its accuracy target or budget."""


def unmet_goal(result, n):
    """One line on a goal ``calibrate_thresholds`` could not meet (``met`` False)."""
    if result.get('budget') is not None:
        return ('calibrate: no thresholds cost at most the budget of {:.4g} ms per sample on '
                'these {} samples; the cheapest set costs {:.4g} ms (accuracy {:.2%}); '
                'result["met"] is False'.format(result['budget'], n, result['cost'],
                                                 result['acc']))
    return ('calibrate: no thresholds reach target_acc={:.4g} on these {} validation samples; '
            'the most accurate reach {:.2%} (set, with result["met"] False): lower the target '
            'or leave it out (default: the last exit\'s accuracy)'.format(
                result['target_acc'], n, result['acc']))


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
