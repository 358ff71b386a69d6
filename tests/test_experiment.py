"""The experiment driver end to end on a small MNIST subset."""
import csv
import json
import os

import pytest

from branchynet import experiment


def test_driver_writes_table_json_figures_and_models(tmp_path, mnist_data):
    results = experiment.run('lenet_mnist', preset='tiny', device='cpu', out_dir=str(tmp_path),
                             overrides={'n_timing': 100}, time_devices=['cpu'])
    files = {os.path.relpath(os.path.join(d, f), tmp_path)
             for d, _, fs in os.walk(tmp_path) for f in fs}
    expected = {'_models/lenet_mnist.bn', '_models/lenet_mnist.npz',
                '_results/lenet_mnist_cpu_table.md', '_results/lenet_mnist_cpu_table.csv',
                '_results/lenet_mnist_cpu_screen.json', '_results/lenet_mnist_results.json',
                '_figs/lenet_mnist_training.png', '_figs/lenet_mnist_training.pdf',
                '_figs/lenet_mnist_cpu_tradeoff.png', '_figs/lenet_mnist_cpu_tradeoff.pdf'}
    assert expected <= files
    screen = json.loads((tmp_path / '_results/lenet_mnist_cpu_screen.json').read_text())
    assert len(screen['points']) == 3 and screen['n_samples'] == 100
    assert all(sum(p['exit_counts']) == 100 for p in screen['points'])
    with open(tmp_path / '_results/lenet_mnist_cpu_table.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ['Device', 'Network', 'Acc. (%)'] and rows[2][1] == 'B-LeNet'
    saved = json.loads((tmp_path / '_results/lenet_mnist_results.json').read_text())
    assert saved['config']['preset'] == 'tiny' and len(saved['training']['joint_loss']) == 1
    assert results['tables']['CPU'][1]['Gain'] > 0


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown network 'vgg'"):
        experiment.resolve_config('vgg', 'fast')
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        experiment.resolve_config('lenet_mnist', 'huge')
    from branchynet.devices import resolve_device
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device('tpu')
