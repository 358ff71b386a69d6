"""What a newcomer meets first with the driver: ``--help`` giving each
preset's real ``--n-val``, a hold-out too large for the data refused naming
``--n-val``, ``--engines`` choosing the timed paths."""
import numpy
import pytest

from branchynet.driver import cli, run as experiment
from branchynet.validation import InvalidValue
from tests.helpers import random_dataset_npz as _npz


def test_help_gives_every_presets_real_n_val_default():
    text = ' '.join(cli.build_parser().format_help().split())
    assert 'fast 5000 (lenet_mnist), 1000 (alex_cifar10, your own), 200 (resnet_cifar10)' \
        in text
    assert 'paper 0;' in text
    assert experiment.resolve_config('resnet_cifar10', 'fast')[1]['n_val'] == 200


def test_a_hold_out_leaving_fewer_training_samples_is_refused_naming_n_val(tmp_path, capsys):
    data = _npz(tmp_path / 'd.npz', 1200)
    code = cli.main(['--network', 'lenet_mnist', '--dataset', data, '--n-val', '1000',
                     '--out', str(tmp_path / 'out'), '--time-devices', 'cpu'])
    err = capsys.readouterr().err
    assert code == 2
    assert '--n-val 1000: holding out 1000 of the 1200 training samples' in err
    assert 'would train on 200' in err and '--n-val 600 or less' in err
    assert not (tmp_path / 'out' / '_models').exists() or \
        not list((tmp_path / 'out' / '_models').iterdir())


def test_half_the_training_set_may_be_held_out():
    from branchynet.driver.stages import split_validation
    x = numpy.zeros((10, 1), numpy.float32)
    y = numpy.arange(10, dtype=numpy.int32) % 2
    assert len(split_validation(x, y, 5, seed=0)[4]) == 5
    with pytest.raises(InvalidValue, match='--n-val 6: .* would train on 4'):
        split_validation(x, y, 6, seed=0)


def test_engines_chooses_the_timed_paths(tmp_path, monkeypatch):
    import json
    from branchynet.driver import stages
    compiled = []
    monkeypatch.setattr(stages, 'compile_numba_engine', lambda *a: compiled.append(a))
    out = tmp_path / 'out'
    assert cli.main(['--network', 'lenet_mnist', '--preset', 'tiny', '--quiet',
                     '--dataset', _npz(tmp_path / 'd.npz', 300), '--n-val', '50',
                     '--n-timing', '20', '--engines', 'fast', '--out', str(out),
                     '--time-devices', 'cpu']) == 0
    assert not compiled  # the numba path is not even compiled
    screen = json.loads((out / '_results' / 'lenet_mnist_cpu_screen.json').read_text())
    assert screen['timing']['paths'] == ['chainer', 'fast']
    table = (out / '_results' / 'lenet_mnist_cpu_table.md').read_text()
    assert 'Numba columns empty on CPU: left out by --engines' in table


@pytest.mark.parametrize('value', ['chainer,onnx', ','])
def test_engines_refuses_unknown_paths_before_any_work(tmp_path, capsys, value):
    assert cli.main(['--network', 'lenet_mnist', '--preset', 'tiny', '--engines', value,
                     '--out', str(tmp_path / 'out')]) == 2
    assert "--engines {!r}: expected a comma-separated list of chainer, fast, numba".format(
        value) in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_a_row_has_one_verdict_beside_its_gain_columns():
    """A knee whose gain on its own path is within noise is no knee, said of that
    path alone: never "no early-exit gain" beside a Gain column reading 1.96x."""
    from branchynet.driver import stages
    from branchynet.reporting import tables
    row = {'Gain': {'median': 1.96, 'min': 1.90, 'max': 2.02, 'verdict': 'faster'},
           'Fast gain': None,
           'Numba gain': {'median': 1.96, 'min': 0.80, 'max': 3.10, 'verdict': 'within noise'}}
    choice = stages.knee_verdict({'index': 3, 'gain': True, 'note': ''}, row, 'numba')
    assert not choice['gain'] and choice['index'] == 3
    assert choice['note'] == ('not a knee: on the numba path, where it was chosen, its gain '
                              'of 1.96x (0.80-3.10) is within noise')
    assert 'no early-exit gain' not in choice['note']
    assert tables.format_cell('Gain', row['Gain']) == '1.96x (1.90-2.02)'
    # a knee beyond noise on its path stays a knee, whatever the other paths show
    row['Numba gain'] = dict(row['Numba gain'], min=1.5, verdict='faster')
    row['Gain'] = dict(row['Gain'], verdict='within noise')
    assert stages.knee_verdict({'index': 3, 'gain': True, 'note': ''}, row, 'numba')['gain']
    slower = {'Chainer': None, 'Gain': {'median': 0.8, 'min': 0.7, 'max': 0.9,
                                        'verdict': 'slower'}}
    assert stages.knee_verdict({'index': 0, 'gain': True, 'note': ''}, slower, 'chainer')[
        'note'].endswith('its gain of 0.80x (0.70-0.90) is a loss')


def test_a_run_records_the_commit_it_started_from(tmp_path, monkeypatch):
    import json
    from branchynet.io import runrecord
    commits = iter(['a' * 40, 'b' * 40 + '+dirty'] + ['c' * 40] * 10)
    monkeypatch.setattr(runrecord, 'source_commit', lambda: next(commits))
    out = tmp_path / 'out'
    assert cli.main(['--network', 'lenet_mnist', '--preset', 'tiny', '--quiet',
                     '--dataset', _npz(tmp_path / 'd.npz', 200), '--n-val', '40',
                     '--n-timing', '10', '--engines', 'chainer', '--out', str(out),
                     '--time-devices', 'cpu']) == 0
    env = json.loads((out / '_results' / 'lenet_mnist_results.json').read_text())['environment']
    assert env['commit'] == 'a' * 40 and env['commit_at_end'] == 'b' * 40 + '+dirty'
    assert env['started'] <= env['recorded']


def test_without_a_validation_split_the_held_out_row_uses_test_halves(tmp_path):
    import json
    out = tmp_path / 'out'
    assert cli.main(['--network', 'lenet_mnist', '--preset', 'tiny', '--quiet',
                     '--dataset', _npz(tmp_path / 'd.npz', 200, n_test=60), '--n-val', '0',
                     '--n-timing', '40', '--engines', 'chainer,fast', '--out', str(out),
                     '--time-devices', 'cpu']) == 0
    results = json.loads((out / '_results' / 'lenet_mnist_results.json').read_text())
    rows = results['tables']['CPU']
    assert len(rows) == 3 and 'calibration' not in results
    held = rows[2]
    assert held['Network'] == ('B-LeNet (held out: T chosen on one test half, measured on the '
                               'other, both ways, averaged)')
    assert sum(held['Exit (%)']) == pytest.approx(100) and held['Thrshld. T'] is None
    summary = results['held_out']['CPU']
    assert [c['on'] for c in summary['chosen']] == ['even', 'odd']
    assert sum(summary['exit_counts']) == 40
    # every sample classified with the thresholds chosen on the other half
    net = experiment.netspec.load('lenet_mnist').get_network()
    from branchynet.io import fileio
    fileio.load_npz(str(out / '_models' / 'lenet_mnist.npz'), net)
    data = numpy.load(tmp_path / 'd.npz')
    x, y = data['test_x'][:40], data['test_y'][:40]
    right, exits = 0, numpy.zeros(net.numexits(), int)
    for measure, chosen in ((slice(1, None, 2), 0), (slice(0, None, 2), 1)):
        labels, ex = net.predict(x[measure], summary['chosen'][chosen]['thresholds'])
        right += int((labels == y[measure]).sum())
        exits += numpy.bincount(ex, minlength=net.numexits())
    assert summary['acc'] == pytest.approx(right / 40)
    assert summary['exit_counts'] == exits.tolist()
    table = (out / '_results' / 'lenet_mnist_cpu_table.md').read_text()
    assert 'chosen on the even test samples (measured on the odd)' in table


def test_a_long_numba_compile_says_it_is_still_going(monkeypatch, capsys):
    import time
    from branchynet.driver import stages
    from branchynet.engines import numba as numbapath
    from branchynet import progress
    monkeypatch.setattr(progress, 'QUIET', False)  # a --quiet run before may have set it
    monkeypatch.setattr(stages, 'COMPILE_HEARTBEAT', 0.05)
    monkeypatch.setattr(numbapath, 'NumbaBranchyNet', lambda net: time.sleep(0.3) or 'engine')
    monkeypatch.setenv('BRANCHYNET_STEP_TIMES', '/nonexistent/step_seconds.json')
    assert stages.compile_numba_engine(None, 'mine') == 'engine'
    out = capsys.readouterr().out
    assert 'CPU: compiling the numba engine of mine' in out
    assert 'CPU: still compiling the numba engine of mine (' in out
    assert 's; measuring each layer\'s kernels, then compiling the network' in out
    assert 'CPU: numba engine of mine ready in ' in out
