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
