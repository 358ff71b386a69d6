"""Calibration meets its goal on synthetic exit outputs with a known optimum."""
import numpy
import pytest

from branchynet.evaluation.calibration import calibrate_thresholds


def two_exit_case():
    """100 samples; exit 1 is right exactly for its 50 most confident samples
    (entropy below 0.5), the last exit is always right; costs 1 and 3."""
    n = 100
    ent = numpy.linspace(0.0, 1.0, n, endpoint=False)[numpy.random.RandomState(0).permutation(n)]
    y = numpy.zeros(n, numpy.int32)
    pred0 = numpy.where(ent < 0.5, 0, 1)
    scores = numpy.stack([ent, numpy.full(n, 2.0)], axis=1)
    preds = numpy.stack([pred0, numpy.zeros(n)], axis=1).astype(numpy.int32)
    return scores, preds, y, [1.0, 3.0]


def test_cheapest_thresholds_meeting_the_accuracy_target():
    scores, preds, y, costs = two_exit_case()
    r = calibrate_thresholds(scores, preds, y, costs, target_acc=1.0, candidates=101)
    assert r['met'] and r['acc'] == 1.0
    assert r['exit_counts'] == [50, 50] and r['cost'] == pytest.approx(2.0)
    assert 0.49 < r['thresholds'][0] <= 0.5


def test_default_target_is_the_last_exits_accuracy():
    scores, preds, y, costs = two_exit_case()
    r = calibrate_thresholds(scores, preds, y, costs, candidates=101)
    assert r['target_acc'] == 1.0 and r['acc'] == 1.0


def test_most_accurate_thresholds_within_a_budget():
    scores, preds, y, costs = two_exit_case()
    r = calibrate_thresholds(scores, preds, y, costs, budget=2.5, candidates=101)
    assert r['met'] and r['acc'] == 1.0 and r['cost'] == pytest.approx(2.0)
    # budget 1.5: at least 75 % must leave at exit 1, so 25 are wrong at best
    r = calibrate_thresholds(scores, preds, y, costs, budget=1.5, candidates=101)
    assert r['met'] and r['cost'] <= 1.5 and r['acc'] == pytest.approx(0.75)


def test_unreachable_goals_are_reported():
    scores, preds, y, costs = two_exit_case()
    r = calibrate_thresholds(scores, preds, y, costs, budget=0.5)
    assert not r['met'] and r['cost'] == pytest.approx(1.0)  # the cheapest possible


def test_three_exits_with_the_optimum_off_any_fixed_grid():
    """Exit 1 right below 0.3, exit 2 right below 0.2 (as B-ResNet's T = (0.3, 0.2))."""
    rng = numpy.random.RandomState(1)
    n = 400
    e0, e1 = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    y = numpy.zeros(n, numpy.int32)
    preds = numpy.stack([numpy.where(e0 < 0.3, 0, 1), numpy.where(e1 < 0.2, 0, 1),
                         numpy.zeros(n)], axis=1).astype(numpy.int32)
    scores = numpy.stack([e0, e1, numpy.full(n, 5.0)], axis=1)
    r = calibrate_thresholds(scores, preds, y, [1.0, 2.0, 4.0], target_acc=1.0,
                             candidates=200)
    assert r['acc'] == 1.0
    t0, t1 = r['thresholds']
    assert abs(t0 - 0.3) < 0.01 and abs(t1 - 0.2) < 0.01
    # no cheaper perfectly accurate setting exists: every sample below 0.3 at exit 1
    # leaves there, every remaining one below 0.2 at exit 2 leaves there
    assert r['exit_counts'][0] == (e0 < 0.3).sum()
    assert r['exit_counts'][1] == ((e0 >= 0.3) & (e1 < 0.2)).sum()


def test_maxprob_thresholds_are_probabilities():
    scores, preds, y, costs = two_exit_case()
    r = calibrate_thresholds(scores / 2, preds, y, costs, target_acc=1.0, measure='maxprob')
    assert 0.0 <= r['thresholds'][0] <= 1.0 and r['acc'] == 1.0


def test_four_exits_use_coordinate_descent_and_meet_the_target():
    rng = numpy.random.RandomState(2)
    n = 300
    e = rng.uniform(0, 1, (n, 3))
    y = numpy.zeros(n, numpy.int32)
    preds = numpy.concatenate([numpy.where(e < 0.4, 0, 1), numpy.zeros((n, 1))],
                              axis=1).astype(numpy.int32)
    scores = numpy.concatenate([e, numpy.full((n, 1), 5.0)], axis=1)
    r = calibrate_thresholds(scores, preds, y, [1.0, 2.0, 3.0, 4.0], target_acc=1.0,
                             candidates=n + 1)  # every sample's score is a candidate
    assert r['met'] and r['acc'] == 1.0
    assert r['cost'] < 4.0 and r['exit_counts'][0] == (e[:, 0] < 0.4).sum()


def test_exit_roc_of_a_perfectly_separating_score_has_auroc_one():
    from branchynet.evaluation.calibration import exit_aurocs, exit_roc
    scores, preds, y, _ = two_exit_case()
    fpr, tpr, auroc = exit_roc(scores, preds, y)
    assert auroc == 1.0 and fpr[0] == 0 and tpr[-1] == 1
    # a score that ranks the wrong answers as the more confident ones: AUROC 0
    assert exit_roc(-scores, preds, y)[2] == 0.0
    # the last exit is right everywhere: its ROC is undefined, reported as None
    assert exit_roc(scores, preds, y, exit_index=1)[2] is None
    assert exit_aurocs(scores, preds, y) == [1.0]


def test_exit_roc_matches_the_rank_statistic():
    # AUROC = P(score of a right answer < score of a wrong one), ties counted half
    rng = numpy.random.RandomState(3)
    s = rng.rand(200, 2)
    preds = numpy.zeros((200, 2), numpy.int32)
    y = (rng.rand(200) < 0.3).astype(numpy.int32)  # exit 1 right where y == 0
    from branchynet.evaluation.calibration import exit_roc
    right, wrong = s[y == 0, 0], s[y == 1, 0]
    below = (right[:, None] < wrong[None, :]).mean()
    tied = (right[:, None] == wrong[None, :]).mean()
    pairs = below + 0.5 * tied
    assert exit_roc(s, preds, y)[2] == pytest.approx(pairs)


def _gap(scores, t, measure='entropy'):
    """The largest score below the threshold's limit and the smallest at or above it."""
    from branchynet.measures import confidence
    limit = confidence.get_measure(measure).limit(t)
    return scores[scores < limit].max(), scores[scores >= limit].min()


@pytest.mark.parametrize('measure', ['entropy', 'maxprob'])
def test_thresholds_lie_midway_between_two_scores_not_on_one(measure):
    """The smallest case where the candidates alone put the threshold on a
    sample's score: two samples, candidates = the two scores (quantiles 0 and
    1). Exit 1 is right only for the more confident one, so the cheapest
    perfect setting lets exactly it leave; the candidate doing that is the
    other sample's score (a tie: that sample's exit was up to the last bits
    of its logits). The threshold returned is the midpoint of the two scores,
    with the same decisions, accuracy and cost."""
    scores = numpy.array([[0.2, 2.0], [0.6, 2.0]])
    preds = numpy.array([[0, 0], [1, 0]], numpy.int32)
    y = numpy.zeros(2, numpy.int32)
    r = calibrate_thresholds(scores, preds, y, [1.0, 3.0], target_acc=1.0, candidates=2,
                             measure=measure)
    assert r['acc'] == 1.0 and r['exit_counts'] == [1, 1] and r['cost'] == 2.0
    (t,) = r['thresholds']
    lo, hi = _gap(scores[:, 0], t, measure)
    assert (lo, hi) == (0.2, 0.6)
    # strictly between, at the midpoint (in the measure's units: 1 - limit for maxprob)
    assert t == pytest.approx(0.4 if measure == 'entropy' else 0.6)
    from branchynet.measures import confidence
    assert lo < confidence.get_measure(measure).limit(t) < hi


def test_no_threshold_of_any_search_sits_on_a_score():
    """Every candidate a score (candidates = samples), two and three early
    exits (exhaustive and coordinate descent), every measure: the thresholds
    chosen keep the decisions of the candidate found (the same accuracy, cost
    and exit counts as the candidate itself, which ``screening.evaluate``
    gives) and every score stays at least half its gap away from them."""
    from branchynet.evaluation import screening
    from branchynet.measures import confidence
    rng = numpy.random.RandomState(7)
    for early, measure, goal in [(1, 'entropy', {}), (2, 'maxprob', {'target_acc': 0.9}),
                                 (2, 'margin', {'budget': 2.0}), (3, 'entropy', {})]:
        n = 40
        s = rng.uniform(0.05, 0.95, (n, early + 1))
        y = numpy.zeros(n, numpy.int32)
        preds = (rng.rand(n, early + 1) < s).astype(numpy.int32)
        preds[:, -1] = 0
        costs = list(range(1, early + 2))
        r = calibrate_thresholds(s, preds, y, costs, measure=measure, candidates=n, **goal)
        m = confidence.get_measure(measure)
        back = screening.evaluate(s, preds, y, [r['thresholds']], path_ms=costs,
                                  measure=measure)
        assert back['acc'][0] == r['acc'] and back['ms'][0] == pytest.approx(r['cost'])
        assert back['exit_counts'][0].tolist() == r['exit_counts']
        for k, t in enumerate(r['thresholds']):
            limit = m.limit(t)
            assert not (s[:, k] == limit).any(), (early, measure, k, t)
            below, above = s[s[:, k] < limit, k], s[s[:, k] >= limit, k]
            if len(below) and len(above):
                assert limit == pytest.approx((below.max() + above.min()) / 2, abs=1e-15)
