"""Screening, curve, knee and Table I helpers."""
import numpy
import pytest

from branchynet import utils
from branchynet.validation import InvalidValue
from tests.helpers import make_three_exit_net


def test_generate_thresholds_is_the_product_over_the_early_exits():
    # num_layers counts every exit, the final one included (numexits()).
    ts = utils.generate_thresholds([0.1, 1.0, 5.0], 3)
    assert len(ts) == 9 and [0.1, 5.0] in ts and [5.0, 0.1] in ts
    assert utils.generate_thresholds([0.1, 1.0], 2) == [[0.1], [1.0]]
    with pytest.raises(ValueError, match='negative'):
        utils.generate_thresholds([-1.0], 2)
    with pytest.raises(ValueError, match='num_layers'):
        utils.generate_thresholds([0.1], 1)


def test_inc_points_keep_only_accuracy_rising_with_runtime():
    accs = [0.90, 0.95, 0.93, 0.97, 0.96]
    diffs = [1.0, 2.0, 3.0, 4.0, 5.0]
    idx = utils.inc_point_indices(accs, diffs)
    assert idx == [0, 1, 3]
    a, d, t, e = utils.get_inc_points(accs, diffs, ['t%d' % i for i in range(5)], [0] * 5,
                                      inc_amt=0.0)
    assert a == [0.90, 0.95, 0.97] and t == ['t0', 't1', 't3']


def test_get_inc_points_default_allows_the_original_small_dip():
    # The original compares with the last kept point and, by default
    # (inc_amt=-0.0005), keeps points up to 0.05 accuracy points below it.
    accs = [0.90, 0.95, 0.9496, 0.9490, 0.96]
    diffs = [1.0, 2.0, 3.0, 4.0, 5.0]
    a, d, t, e = utils.get_inc_points(accs, diffs, list('abcde'), [[1]] * 5)
    assert t == ['a', 'b', 'c', 'e'] and d == [1.0, 2.0, 3.0, 5.0]
    assert utils.get_inc_points(accs, diffs, list('abcde'), [[1]] * 5, inc_amt=0.)[2] == \
        ['a', 'b', 'e']


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
    result = utils.screen_thresholds(net, x, y, [0.5, 1.6, 10.0], progress=False)
    ts, accs, diffs, exits = result
    assert len(ts) == 9 and len(result.trunk_ms) == 9
    for t, acc, ex in zip(ts, accs, exits):
        labels, got_exits = net.predict(x, t)
        assert acc == pytest.approx((labels == y).mean())
        assert ex == numpy.bincount(got_exits, minlength=3).tolist()
    assert all(d > 0 and tr > 0 for d, tr in zip(diffs, result.trunk_ms))
    base = utils.measure_main(net, x, y)
    assert base['exit_counts'] == [0, 0, 30] and base['ms'] > 0 and base['trunk_ms'] > 0
    knee = utils.select_knee(accs, diffs, base['acc'])
    rows = utils.branchy_table_rows('Tiny', base, result.records[knee], printout=False)
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
    assert numpy.array(losses).shape == (2,)  # the original's: one number per epoch
    losses, accs, seconds = utils.train_exits(net, x, y, main=True, batchsize=16,
                                              num_epoch=1, progress=False)
    assert numpy.array(losses).shape == (1, 1)
    losses, accs, seconds = utils.train(net, x, y, batchsize=16, num_epoch=3, progress=False)
    assert numpy.array(losses).shape == (3, 3) and numpy.array(accs).shape == (3, 3)
    acc, secs, counts, exit_accs = utils.test(net, x, y, thresholds=[1.0, 1.0])
    assert sum(counts) == 40
    assert isinstance(counts, numpy.ndarray) and isinstance(exit_accs, numpy.ndarray)


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


def test_screen_branchy_returns_numpy_seconds_of_the_ms_screen(monkeypatch):
    rng = numpy.random.RandomState(0)
    net = make_three_exit_net()
    x = rng.randn(6, 1, 8, 8).astype(numpy.float32)
    y = rng.randint(0, 5, 6).astype(numpy.int32)
    ms = utils.screen_thresholds(net, x, y, [0.5, 10.0], progress=False, trunk_only=False)
    monkeypatch.setattr(utils, 'screen_thresholds', lambda *a, **k: ms)
    ts, accs, diffs, exits = utils.screen_branchy(net, x, y, [0.5, 10.0])
    assert isinstance(diffs, numpy.ndarray) and isinstance(accs, numpy.ndarray)
    numpy.testing.assert_allclose(diffs * 1000., ms[2])
    assert ts == ms[0] and [e.tolist() for e in exits] == ms[3]


def test_original_table_printout(capsys):
    lines = utils.branchy_table_results(0.9, 2.0, 1.0, [0.8, 0.91, 0.905], [0.5, 1.0, 1.5],
                                        [0.9], [0.25], inc_amt=0.0, network='Net')
    assert lines == ['Network,Hardware,Accuracy,Runtime,Speedup',
                     'Net,cpu,90.000,2.000,1.00',
                     'Branchy Net,cpu,80.000,0.500,4.00',
                     'Branchy Net,cpu,91.000,1.000,2.00',
                     'Branchy Net,cpu,90.500,1.500,1.33',  # the last point is always printed
                     'Net,gpu,90.000,1.000,1.00',
                     'Branchy Net,gpu,90.000,0.250,4.00']
    assert capsys.readouterr().out.splitlines() == lines


def test_network_times_from_branch_times():
    # exit i costs branch_times[i] seconds; the mix is in ms per sample.
    assert utils.compute_network_times([[1, 0], [1, 1], [0, 4]], [0.001, 0.003]) == \
        pytest.approx([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match='counts'):
        utils.compute_network_times([[0, 0]], [0.001, 0.003])


@pytest.mark.parametrize('exits, branch_times, match', [
    # one vector instead of a list of them (and one branch time for two exits)
    ([10, 5], [1.0], r'exits must be a list of exit-count vectors \(counts >= 0, one per exit: '
                     r'1 here'),
    ([-10, 5], [1, 2], r'exits must be a list of exit-count vectors \(counts >= 0, one per '
                       r'exit: 2 here, with a positive sum\), e.g. \[\[10, 5\]\]; got '
                       r'\[-10, 5\]'),
    ([[-10, 15]], [1, 2], r'exits must be .*got \[\[-10, 15\]\]'),
    ([[10, 5]], 1.0, 'branch_times must be a list of seconds per sample'),
    ([[10, 5]], [1.0, float('nan')], 'branch_times must be'),
])
def test_network_times_refuse_what_they_cannot_price_in_one_line(exits, branch_times, match):
    with pytest.raises(InvalidValue, match=match) as info:
        utils.compute_network_times(exits, branch_times)
    assert '\n' not in str(info.value)


def test_branch_times_route_every_sample_to_one_exit(monkeypatch):
    rng = numpy.random.RandomState(0)
    net = make_three_exit_net()
    x = rng.randn(10, 1, 8, 8).astype(numpy.float32)
    y = rng.randint(0, 5, 10).astype(numpy.int32)
    seen = []
    real = utils.test

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[2].tolist())
        return out
    monkeypatch.setattr(utils, 'test', spy)
    times = utils.compute_branch_times(net, x, y, num_samples=8)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert seen == [[8, 0, 0], [0, 8, 0], [0, 0, 8]]


def test_suite_b_sets_thresholds_and_suite_a_uses_exit_shares():
    rng = numpy.random.RandomState(0)
    net = make_three_exit_net()
    x = rng.randn(20, 1, 8, 8).astype(numpy.float32)
    y = rng.randint(0, 5, 20).astype(numpy.int32)
    ps, accs, diffs, exits = utils.test_suite_B(net, x, y, ps=[[0., 0.], [10., 10.]])
    assert [e.tolist() for e in exits] == [[0, 0, 20], [20, 0, 0]]
    assert net.thresholdExits == [10., 10.] and diffs.shape == (2,)
    ps, accs, diffs = utils.test_suite_A(net, x, y, ps=[0.5, 1.0])
    assert net.thresholdExits is None and len(accs) == 2
    # share 0.5: 10 samples leave at exit 1, 5 of the other 10 at exit 2
    assert utils.test(net, x, y)[2].tolist() == [20, 0, 0]  # percentTestExits is now 1.0
    net.percentTestExits = 0.5
    assert utils.test(net, x, y)[2].tolist() == [10, 5, 5]
    net.percentTestExits = [0.5, 0.25]  # a list: shares of the whole batch
    assert utils.test(net, x, y, batchsize=10)[2].tolist() == [10, 4, 6]


def test_traintest_alternates_epochs_and_evaluations():
    rng = numpy.random.RandomState(0)
    net = make_three_exit_net(thresholdExits=[0.5, 0.5])
    x = rng.randn(24, 1, 8, 8).astype(numpy.float32)
    y = rng.randint(0, 5, 24).astype(numpy.int32)
    out = utils.traintest(net, x, y, x[:10], y[:10], batchsize=8, num_epoch=2)
    losses, accs, train_s, test_accs, test_s, test_exits, breakdowns = out
    assert len(losses) == 2 and len(losses[0]) == 3 and len(test_accs) == 2
    assert all(e.sum() == 10 for e in test_exits) and train_s > 0 and test_s > 0


def test_get_sm_and_entropy_setdiff():
    rng = numpy.random.RandomState(0)
    net = make_three_exit_net()
    x = rng.randn(12, 1, 8, 8).astype(numpy.float32)
    sms = utils.get_SM(net, x, batchsize=5)
    assert [s.shape for s in sms] == [(12, 5)] * 3
    a = [numpy.arange(8.), numpy.arange(8.)]
    assert utils.get_ent_setdiff(a, a) == [0., 0.]
    # reversed entropies at exit 1: the 4 lowest become the 4 highest
    assert utils.get_ent_setdiff(a, [a[0][::-1], a[1]])[0] == 1.0
