"""benchmarks/recorded_rows.py: a recorded run's settings read back as the run wrote them."""
import os

import pytest

from tests.helpers import ROOT, benchmark_module

RUN = os.path.join(ROOT, 'results', 'paper', 'alex_cifar10_jpeg_cpu_shift_12x12')


@pytest.fixture(scope='module')
def recorded_rows():
    with benchmark_module('recorded_rows') as module:
        yield module


def test_the_knee_and_calibrated_thresholds_are_the_runs(recorded_rows):
    name, results, weights = recorded_rows.read_run(RUN)
    assert name == 'alex_cifar10' and weights.endswith('alex_cifar10.npz')
    settings = recorded_rows.settings_of(results)
    assert list(settings) == ['baseline', 'knee', 'calibrated']
    assert settings['baseline'] is None
    assert settings['knee'] == [1.0, 5.0]  # the row in table1.md
    assert settings['calibrated'] == results['calibration']['CPU']['calibrated']['thresholds']


def test_a_folder_without_a_run_is_named(recorded_rows, tmp_path):
    with pytest.raises(SystemExit, match='holds 0 \\*_results.json files'):
        recorded_rows.read_run(str(tmp_path))



def test_thresholds_at_a_target_accuracy_reach_it_on_the_held_out_images(recorded_rows):
    import numpy
    from tests.helpers import make_three_exit_net
    net = make_three_exit_net()
    net.testing()
    rng = numpy.random.RandomState(0)
    x = rng.rand(200, 1, 8, 8).astype(numpy.float32)
    y = net.predict(x, [0., 0.])[0].copy()  # labels the last exit gets right ...
    y[::4] = (y[::4] + 1) % 5                # ... but for a quarter of the samples
    macs = [1., 4., 10.]
    ts, acc = recorded_rows.thresholds_at(net, x, y, macs, 75.)
    assert acc >= 0.75
    labels, exits = net.predict(x, ts)
    assert numpy.isclose((labels == y).mean(), acc)
    ts_low, _ = recorded_rows.thresholds_at(net, x, y, macs, 1.)
    assert (net.predict(x, ts_low)[1] < 2).all()  # a low target: nobody needs the last exit
    with pytest.raises(SystemExit, match='no thresholds reach 99.0 %'):
        recorded_rows.thresholds_at(net, x, y, macs, 99.)


def test_an_infinite_threshold_recorded_as_null_reads_back_as_infinity(recorded_rows):
    results = {'tables': {'CPU': [
        {'Network': 'AlexNet', 'Thrshld. T': None},
        {'Network': 'B-AlexNet (calibrated)', 'Thrshld. T': [0.93, None]}]}}
    assert recorded_rows.settings_of(results) == {'baseline': None,
                                                  'calibrated': [0.93, float('inf')]}
