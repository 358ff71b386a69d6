"""Cached screening equals real runs; costs; the arithmetic limit."""
import numpy
import pytest

from branchynet import utils
from branchynet.evaluation import screening
from branchynet.measures import costs
from branchynet.engines.fast import FastBranchyNet
from networks import lenet_mnist
from tests.helpers import make_three_exit_net


def test_cached_grid_equals_real_batch1_runs_exactly(small_batch):
    x, y = small_batch
    net = make_three_exit_net()
    grid = [0.5, 1.55, 1.6, 10.0]
    records, info = screening.screen_cached(net, x, y, grid, cost_samples=10)
    real = utils.screen_thresholds(net, x, y, grid, progress=False)
    assert len(records) == 16
    for r, acc, ex in zip(records, real[1], real[3]):
        assert r['acc'] == pytest.approx(acc) and r['exit_counts'] == ex
    assert len(info['path_ms']['chainer']) == 3


def test_exits_for_follows_the_strict_first_exit_rule():
    ent = numpy.array([[0.1, 0.1, 9.], [0.5, 0.05, 9.], [0.5, 0.5, 9.]])
    ex = screening.exits_for(ent, [[0.1, 0.1], [0.2, 0.2], [1.0, 0.0]])
    assert ex.tolist() == [[2, 1, 2], [0, 1, 2], [0, 0, 0]]


def test_predicted_time_is_the_exit_weighted_path_cost():
    ent = numpy.array([[0.0, 9.], [9., 9.], [9., 9.], [0.0, 9.]])
    pred = numpy.zeros((4, 2), numpy.int32)
    r = screening.evaluate(ent, pred, numpy.zeros(4, numpy.int32), [[0.5], [0.0]],
                           path_ms=[1.0, 3.0], path_macs=[10, 50])
    assert r['exit_counts'].tolist() == [[2, 2], [0, 4]]
    numpy.testing.assert_allclose(r['ms'], [2.0, 3.0])
    numpy.testing.assert_allclose(r['macs'], [30, 50])


def test_lenet_multiply_adds_and_parameters_by_hand():
    c = costs.exit_costs(lenet_mnist.get_network())
    # conv1 5x30x30 outputs x 25 = 112500; head: conv 10x15x15 x 45 = 101250,
    # linear 640x10 = 6400; trunk after: conv 10x17x17 x 125 = 361250,
    # conv 20x11x11 x 250 = 605000, linear 720x84 = 60480; final 84x10 = 840
    assert c['segment_macs'] == [112500, 361250 + 605000 + 60480]
    assert c['head_macs'] == [101250 + 6400, 840]
    assert c['path_macs'] == [220150, 220150 + 1026730 + 840]
    assert c['main_macs'] == 1140070
    assert c['segment_params'] == [130, 1260 + 5020 + 60564]
    assert c['head_params'] == [460 + 6410, 850]
    # 94.3 % leaving at exit 1 (the paper's knee): about 4.0x in arithmetic
    assert costs.arithmetic_limit_gain(c, [943, 57]) == pytest.approx(
        1140070 / (0.943 * 220150 + 0.057 * 1247720))


def test_fast_engine_costs_are_measured_for_every_exit(small_batch):
    x, y = small_batch
    net = make_three_exit_net()
    records, info = screening.screen_cached(
        net, x, y, [0.5, 2.0], engines={'chainer': net, 'fast': FastBranchyNet(net)},
        cost_samples=8)
    assert all(r['ms_fast'] > 0 and r['ms_chainer'] > 0 for r in records)
    assert len(info['path_ms']['fast']) == 3


@pytest.mark.parametrize('measure', ['entropy', 'maxprob', 'margin'])
def test_path_costs_force_every_exit_for_every_measure(small_batch, measure):
    """Forcing an exit uses the measure's own terms (0/inf is right for entropy only)."""
    x, y = small_batch
    net = make_three_exit_net(confidence=measure)
    assert len(screening.path_costs(net, x[:5])) == 3
    grid = [0.3, 0.9] if measure != 'entropy' else [0.5, 1.6]
    records, info = screening.screen_cached(net, x, y, grid, cost_samples=5)
    real = utils.screen_thresholds(net, x, y, grid, progress=False)
    for r, acc, ex in zip(records, real[1], real[3]):
        assert r['acc'] == pytest.approx(acc) and r['exit_counts'] == ex
