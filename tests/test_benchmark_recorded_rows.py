"""benchmarks/recorded_rows.py: a recorded run's settings read back as the run wrote them."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, 'results', 'paper', 'alex_cifar10_jpeg_cpu_shift_12x12')


@pytest.fixture(scope='module')
def recorded_rows():
    spec = importlib.util.spec_from_file_location(
        'recorded_rows', os.path.join(ROOT, 'benchmarks', 'recorded_rows.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
