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
