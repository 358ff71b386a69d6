"""Screening, curve, knee and Table I helpers."""
import numpy
import pytest

from branchynet import utils
from tests.conftest import make_three_exit_net


def test_generate_thresholds_is_the_cartesian_product():
    ts = utils.generate_thresholds([0.1, 1.0, 5.0], 2)
    assert len(ts) == 9 and [0.1, 5.0] in ts and [5.0, 0.1] in ts
    assert utils.generate_thresholds([0.1, 1.0], 1) == [[0.1], [1.0]]
    with pytest.raises(ValueError, match='negative'):
        utils.generate_thresholds([-1.0], 1)


def test_inc_points_keep_only_accuracy_rising_with_runtime():
    accs = [0.90, 0.95, 0.93, 0.97, 0.96]
    diffs = [1.0, 2.0, 3.0, 4.0, 5.0]
    idx = utils.inc_point_indices(accs, diffs)
    assert idx == [0, 1, 3]
    a, d, t, e = utils.get_inc_points(accs, diffs, ['t%d' % i for i in range(5)], [0] * 5)
    assert a == [0.90, 0.95, 0.97] and t == ['t0', 't1', 't3']


def test_knee_is_fastest_point_at_least_as_accurate_as_baseline():
    accs = [0.90, 0.95, 0.99, 0.995]
    diffs = [1.0, 2.0, 3.0, 4.0]
    assert utils.select_knee(accs, diffs, 0.99) == 2
    assert utils.select_knee(accs, diffs, 0.999) == 3  # none reaches: most accurate
    assert utils.select_knee([0.99, 0.99], [2.0, 1.0], 0.98) == 1


def test_screen_matches_predict_and_table_block():
    rng = numpy.random.RandomState(0)
    net = make_three_exit_net()
    x = rng.randn(30, 1, 8, 8).astype(numpy.float32)
    y = rng.randint(0, 5, 30).astype(numpy.int32)
    result = utils.screen_branchy(net, x, y, [0.5, 1.6, 10.0], progress=False)
    ts, accs, diffs, exits = result
    assert len(ts) == 9 and len(result.trunk_diffs) == 9
    for t, acc, ex in zip(ts, accs, exits):
        labels, got_exits = net.predict(x, t)
        assert acc == pytest.approx((labels == y).mean())
        assert ex == numpy.bincount(got_exits, minlength=3).tolist()
    assert all(d > 0 and tr > 0 for d, tr in zip(diffs, result.trunk_diffs))
    base = utils.measure_main(net, x, y)
    assert base['exit_counts'] == [0, 0, 30] and base['ms'] > 0 and base['trunk_ms'] > 0
    knee = utils.select_knee(accs, diffs, base['acc'])
    rows = utils.branchy_table_results('Tiny', base, result.records[knee], printout=False)
    assert rows[0]['Network'] == 'Tiny' and rows[1]['Network'] == 'B-Tiny'
    assert rows[1]['Gain'] == pytest.approx(base['ms'] / diffs[knee])
    assert sum(rows[1]['Exit (%)']) == pytest.approx(100.0)
    table = utils.format_table(rows)
    assert '| CPU | B-Tiny |' in table and 'Thrshld. T' in table


def test_train_returns_per_epoch_per_exit_curves():
    rng = numpy.random.RandomState(0)
    net = make_three_exit_net()
    x = rng.randn(40, 1, 8, 8).astype(numpy.float32)
    y = rng.randint(0, 5, 40).astype(numpy.int32)
    losses, accs, seconds = utils.train(net, x, y, main=True, batchsize=16, num_epoch=2,
                                        progress=False)
    assert numpy.array(losses).shape == (2, 1)
    losses, accs, seconds = utils.train(net, x, y, batchsize=16, num_epoch=3, progress=False)
    assert numpy.array(losses).shape == (3, 3) and numpy.array(accs).shape == (3, 3)
    acc, secs, counts, exit_accs = utils.test(net, x, y, thresholds=[1.0, 1.0])
    assert sum(counts) == 40


# ------------------------------------------------------------ choose_knee
def test_choose_knee_takes_the_fastest_accurate_point_that_is_faster_beyond_noise():
    accs = [0.990, 0.992, 0.991, 0.980]
    ms = [0.99, 0.60, 0.40, 0.20]   # baseline 1.00 ms, 0.990 accuracy
    choice = utils.choose_knee(accs, ms, 0.990, 1.00)
    assert choice == {'index': 2, 'gain': True, 'note': ''}


def test_choose_knee_refuses_a_point_faster_only_within_noise():
    # The only point as accurate as the baseline is predicted 0.3 % faster:
    # no knee; the fastest point within half a point of accuracy is given instead.
    accs = [0.990, 0.987, 0.970]
    ms = [0.997, 0.50, 0.30]
    choice = utils.choose_knee(accs, ms, 0.990, 1.00)
    assert choice['index'] == 1 and not choice['gain']
    assert choice['note'] == utils.NO_GAIN + '; fastest within 0.5 points'


def test_choose_knee_without_any_close_point_shows_the_most_accurate():
    accs = [0.95, 0.96, 0.96]
    ms = [0.3, 0.6, 0.5]
    choice = utils.choose_knee(accs, ms, 0.99, 1.0)
    assert choice['index'] == 2 and not choice['gain']
    assert choice['note'] == utils.NO_GAIN + '; none within 0.5 points: most accurate setting'


def test_choose_knee_checks_its_arguments():
    with pytest.raises(ValueError, match='no screened points'):
        utils.choose_knee([], [], 0.9, 1.0)
    with pytest.raises(ValueError, match='min_gain must be >= 1'):
        utils.choose_knee([0.9], [0.5], 0.9, 1.0, min_gain=0.5)
