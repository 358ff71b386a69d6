"""The experiment driver end to end on a small MNIST subset."""
import csv
import json
import os

import numpy
import pytest

from branchynet import utils
from branchynet.driver import cli, run as experiment, stages


def test_driver_writes_table_json_figures_and_models(tmp_path, mnist_data):
    results = experiment.run('lenet_mnist', preset='tiny', device='cpu', out_dir=str(tmp_path),
                             overrides={'n_timing': 100}, time_devices=['cpu'])
    files = {os.path.relpath(os.path.join(d, f), tmp_path)
             for d, _, fs in os.walk(tmp_path) for f in fs}
    expected = {'_models/lenet_mnist.bn', '_models/lenet_mnist.npz',
                '_results/lenet_mnist_cpu_table.md', '_results/lenet_mnist_cpu_table.csv',
                '_results/lenet_mnist_cpu_screen.json', '_results/lenet_mnist_results.json',
                '_figs/lenet_mnist_training.png', '_figs/lenet_mnist_training.pdf',
                '_figs/lenet_mnist_cpu_tradeoff.png', '_figs/lenet_mnist_cpu_tradeoff.pdf',
                '_figs/lenet_mnist_entropy.png', '_figs/lenet_mnist_entropy.pdf',
                '_figs/lenet_mnist_cpu_measures.png', '_results/lenet_mnist_cpu_calibration.md'}
    assert expected <= files
    screen = json.loads((tmp_path / '_results/lenet_mnist_cpu_screen.json').read_text())
    assert len(screen['points']) == 3 and screen['n_samples'] == 100
    assert all(sum(p['exit_counts']) == 100 for p in screen['points'])
    with open(tmp_path / '_results/lenet_mnist_cpu_table.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ['Device', 'Network', 'Acc. (%)']
    assert rows[2][1] == branchy_row_label('B-LeNet', screen)
    saved = json.loads((tmp_path / '_results/lenet_mnist_results.json').read_text())
    assert saved['config']['preset'] == 'tiny' and len(saved['training']['joint_loss']) == 1
    assert saved['data']['n_val'] == 200 and len(set(saved['data']['val_indices'])) == 200
    measures = [m['measure'] for m in saved['calibration']['CPU']['measures']]
    assert measures == ['entropy', 'maxprob', 'margin']
    md = (tmp_path / '_results/lenet_mnist_cpu_calibration.md').read_text()
    assert '| maxprob |' in md and 'calibrated T =' in md
    knee = results['tables']['CPU'][1]
    assert knee['Gain']['median'] > 0 and len(knee['Time (ms)']['repeats']) == 3  # tiny: 3
    calibrated = results['tables']['CPU'][2]
    assert calibrated['Network'] == 'B-LeNet (calibrated)'
    assert calibrated['Fast gain']['median'] > 0 and calibrated['MAC limit'] > 0
    assert 'gains against the baseline timed again in its own rounds: chainer ' in \
        calibrated['Notes'][0]
    assert calibrated['Notes'][0] in (tmp_path / '_results/lenet_mnist_cpu_table.md').read_text()
    assert screen['timing']['repeats'] == 3 and len(screen['knee']['ms_repeats']) == 3
    assert_knee_chosen_on_the_fastest_path(screen)
    assert 'path (the fastest)' in md and saved['calibration']['CPU']['calibrated'][
        'cost_path'] == screen['knee_path']


def assert_knee_chosen_on_the_fastest_path(screen):
    """The knee is the knee rule applied to the times of the path whose
    baseline was fastest, and every timed path's predicted times are kept."""
    base_ms = screen['knee_path_baseline_ms']
    path = screen['knee_path']
    assert set(base_ms) == set(screen['timing']['paths']) and path == min(base_ms, key=base_ms.get)
    points = screen['points']
    assert all('ms_' + p in point for p in base_ms for point in points)
    choice = utils.choose_knee([p['acc'] for p in points], [p['ms_' + path] for p in points],
                               screen['baseline']['acc'], base_ms[path])
    assert choice['index'] == screen['knee_index']
    assert screen['knee_check']['path'] == path
    assert any(note.startswith('Knee chosen with the {} path'.format(path))
               for note in screen['timing']['notes'])


def branchy_row_label(name, screen):
    """The BranchyNet row's name: plain for a knee, else saying there is no gain
    (briefly trained test models often have none)."""
    if screen['knee_is_gain']:
        assert screen['knee_note'] == ''
        return name
    assert screen['knee_note'].startswith((utils.NO_GAIN, stages.NOT_A_KNEE))
    return '{} ({})'.format(name, screen['knee_note'])


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown network 'vgg'"):
        experiment.resolve_config('vgg', 'fast')
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        experiment.resolve_config('lenet_mnist', 'huge')
    from branchynet.devices import resolve_device
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device('tpu')


def test_driver_runs_a_cifar_network_on_a_user_npz(tmp_path):
    """B-AlexNet, tiny preset, on a 3x32x32 npz that the test writes."""
    from datasets import npz
    rng = numpy.random.RandomState(0)
    path = str(tmp_path / 'mine.npz')
    npz.save(path, rng.rand(64, 3, 32, 32).astype(numpy.float32),
             rng.randint(0, 10, 64).astype(numpy.int32),
             rng.rand(20, 3, 32, 32).astype(numpy.float32),
             rng.randint(0, 10, 20).astype(numpy.int32))
    results = experiment.run('alex_cifar10', preset='tiny', out_dir=str(tmp_path),
                             overrides={'dataset_path': path, 'n_val': 16},
                             time_devices=['cpu'])
    assert results['config']['dataset_path'] == path
    rows = results['tables']['CPU']
    screen = json.loads((tmp_path / '_results' / 'alex_cifar10_cpu_screen.json').read_text())
    assert rows[1]['Network'] == branchy_row_label('B-AlexNet', screen)
    assert len(rows[1]['Thrshld. T']) == 2


def test_a_cifar_network_rejects_mnist_shaped_data_clearly(tmp_path):
    with pytest.raises(ValueError, match=r'per-sample shape \(3, 32, 32\).*got \(1, 28, 28\)'):
        experiment.run('alex_cifar10', preset='tiny', out_dir=str(tmp_path),
                       overrides={'dataset_path': 'mnist', 'n_train': 20, 'n_test': 10,
                                  'n_val': 5},
                       time_devices=['cpu'])


def test_report_puts_the_paper_beside_ours(tmp_path, mnist_data):
    from branchynet.reporting import report
    experiment.run('lenet_mnist', preset='tiny', out_dir=str(tmp_path),
                   overrides={'n_timing': 50}, time_devices=['cpu'])
    report.write(str(tmp_path / '_results'))
    md = (tmp_path / '_results' / 'table1.md').read_text()
    screen = json.loads((tmp_path / '_results' / 'lenet_mnist_cpu_screen.json').read_text())
    assert '| CPU | {} |'.format(branchy_row_label('B-LeNet', screen)) in md
    assert '| 99.25 | 0.620 | 5.44x | 0.025 | 94.30, 5.63 |' in md
    assert 'preset `tiny`, 1 main-only + 1 joint epochs' in md
    with open(tmp_path / '_results' / 'table1.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0][1:4] == ['Device', 'Network', 'Acc. (%)'] and len(rows) == 4
    assert rows[3][2] == 'B-LeNet (calibrated)' and rows[3][-5:] == ['-'] * 5


def test_a_network_without_data_is_skipped_with_a_clear_line(tmp_path, monkeypatch, capsys):
    from datasets import cifar10
    monkeypatch.delenv('BRANCHYNET_CIFAR10', raising=False)
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    monkeypatch.setattr(cifar10, 'URL', 'http://cifar.invalid/cifar-10-python.tar.gz')
    assert cli.main(['--network', 'alex_cifar10', '--preset', 'tiny',
                            '--out', str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert 'skipped alex_cifar10: CIFAR-10 could not be downloaded' in err
    assert 'BRANCHYNET_CIFAR10' in err
    assert not (tmp_path / '_models').exists()


def test_validation_split_keeps_the_class_mix_and_is_seeded():
    from branchynet.driver.stages import split_validation
    y = numpy.repeat(numpy.arange(10, dtype=numpy.int32), [300, 100] * 5)
    x = numpy.arange(len(y), dtype=numpy.float32)[:, None]
    x_rest, y_rest, x_val, y_val, val = split_validation(x, y, 200, seed=4)
    # stratified: 30 of each 300-sample class, 10 of each 100-sample class
    assert numpy.bincount(y_val).tolist() == [30, 10] * 5
    assert sorted(val + x_rest[:, 0].astype(int).tolist()) == list(range(len(y)))
    assert split_validation(x, y, 200, seed=4)[4] == val != split_validation(x, y, 200, seed=5)[4]
    # fewer held-out samples than classes: still a seeded split of the asked size
    assert len(split_validation(x, y, 5, seed=0)[4]) == 5


def test_presets_subsets_are_class_balanced_and_keep_the_data_order():
    balanced_head = stages.balanced_head
    y = numpy.array([0, 0, 0, 0, 1, 2, 2, 2, 1, 0])
    assert balanced_head(y, 5).tolist() == [0, 1, 4, 5, 8]      # 2, 2, 1: class 1 has 2
    assert balanced_head(y, 7).tolist() == [0, 1, 2, 4, 5, 6, 8]  # class 1's share passes on
    assert balanced_head(y, 99).tolist() == list(range(10))
    grouped = numpy.repeat(numpy.arange(10), 100)   # sorted by class, as an image folder
    counts = numpy.bincount(grouped[balanced_head(grouped, 95)], minlength=10)
    assert counts.tolist() == [10] * 5 + [9] * 5


def test_the_n_train_subset_of_a_dataset_holds_every_class(tmp_path):
    rng = numpy.random.RandomState(0)
    y = numpy.sort(rng.randint(0, 4, 200)).astype(numpy.int32)  # grouped by class
    x = rng.rand(200, 1, 4, 4).astype(numpy.float32)
    path = str(tmp_path / 'grouped.npz')
    numpy.savez(path, train_x=x, train_y=y, test_x=x[:40], test_y=y[:40])
    config = {'dataset_path': path, 'num_classes': 4, 'n_train': 40, 'n_test': 20,
              'network': None}
    x_train, y_train, x_test, y_test = experiment.load_dataset(config)
    assert numpy.bincount(y_train).tolist() == [10, 10, 10, 10]
    assert len(y_test) == 20


def test_a_baseline_near_chance_is_said_under_the_table():
    labels = numpy.arange(40) % 10
    note = stages.near_chance_note(0.075, labels)
    assert '7.50 %' in note and '10.0 % for 10 classes' in note and 'too little training' in note
    assert stages.near_chance_note(0.20, labels) is None  # twice chance: no note
    assert stages.near_chance_note(0.45, labels) is None
    assert '50.0 % for 2 classes' in stages.near_chance_note(0.9, numpy.zeros(5, int))
