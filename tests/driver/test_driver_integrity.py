"""The driver refuses bad settings before any work, keeps one run per output
folder, never mixes snapshots of different runs, and writes standard JSON."""
import json
import subprocess
import sys

import numpy
import pytest

from branchynet.driver import cli, run as experiment
from branchynet.io import fileio, runrecord
from branchynet.training import checkpoint, loop as training

TINY = ['--network', 'lenet_mnist', '--preset', 'tiny', '--time-devices', 'cpu']
SMALL = TINY + ['--n-train', '300', '--n-test', '40', '--n-val', '0', '--n-timing', '20']


def _main(tmp_path, *args):
    return cli.main(TINY + ['--out', str(tmp_path)] + list(args))


@pytest.mark.parametrize('args, match', [
    (['--n-train', '0'], '--n-train must be an integer >= 1, got 0'),
    (['--n-train', '-5'], '--n-train must be an integer >= 1, got -5'),
    (['--n-val', '-1'], '--n-val must be an integer >= 0, got -1'),
    (['--n-test', '-1'], '--n-test must be an integer >= 1, got -1'),
    (['--n-timing', '-1'], '--n-timing must be an integer >= 1, got -1'),
    (['--n-timing', '0'], '--n-timing must be an integer >= 1, got 0'),
    (['--batchsize', '0'], '--batchsize must be an integer >= 1, got 0'),
    (['--epochs-main', '-1'], '--epochs-main must be an integer >= 0, got -1'),
    (['--time-devices', 'foo'], "unknown device 'foo'"),
    (['--time-devices', 'cpu,,cpu'], "unknown device ''"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, capsys, args, match):
    assert _main(tmp_path / 'out', *args) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_out_under_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / 'file').write_text('x')
    assert _main(tmp_path / 'file' / 'out') == 2
    err = capsys.readouterr().err
    assert 'cannot create the folder' in err and 'Not a directory' in err


def test_a_programming_error_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError('unsupported operand type(s)')  # a bug, not bad input
    monkeypatch.setattr(experiment, '_run_locked', broken)
    with pytest.raises(TypeError, match='unsupported operand'):
        _main(tmp_path)


def test_a_full_disk_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(28, 'No space left on device', str(tmp_path / 'x'))
    monkeypatch.setattr(experiment, '_run_locked', full)
    assert _main(tmp_path) == 1
    assert 'error: No space left on device: ' in capsys.readouterr().err


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_second_run_on_one_out_is_refused(tmp_path, capsys, live_process):
    import socket
    tmp_path.joinpath(fileio.RunLock.NAME).write_text(json.dumps(
        {'pid': live_process, 'host': socket.gethostname(), 'started': 'now'}))
    assert _main(tmp_path) == 2
    err = capsys.readouterr().err
    assert 'another run is using' in err and 'process {}'.format(live_process) in err
    assert not (tmp_path / '_models' / 'lenet_mnist.npz').exists()


def test_lock_is_exclusive_and_released(tmp_path):
    with fileio.RunLock(tmp_path):
        with pytest.raises(fileio.RunLocked, match='another run is using'):
            fileio.RunLock(tmp_path).acquire()
    assert not (tmp_path / fileio.RunLock.NAME).exists()
    with fileio.RunLock(tmp_path):  # free again
        pass


def test_stale_lock_and_temporaries_of_a_killed_run_are_cleaned(tmp_path, capsys):
    import socket
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    tmp_path.joinpath(fileio.RunLock.NAME).write_text(json.dumps(
        {'pid': dead.pid, 'host': socket.gethostname(), 'started': 'then'}))
    models = tmp_path / '_models'
    models.mkdir()
    parts = [models / '.lenet_mnist.branchynet-tmp-{}-k2j4h1ab.part.npz'.format(dead.pid),
             tmp_path / '_figs' / '.x.branchynet-tmp-{}-ab12cd34.part.png'.format(dead.pid)]
    (tmp_path / '_figs').mkdir()
    for p in parts:
        p.write_bytes(b'half')
    keep = models / 'notes.part.txt'  # not one of ours: kept
    keep.write_text('mine')
    # stops right after the lock, cleaning and data loading: no such init file
    assert _main(tmp_path, '--init', str(tmp_path / 'missing.npz')) == 2
    assert not any(p.exists() for p in parts) and keep.exists()
    assert 'removed 1 temporary file(s)' in capsys.readouterr().out
    assert not (tmp_path / fileio.RunLock.NAME).exists()


def test_atomic_writes_sync_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(fileio, 'fsync_folder', lambda folder: synced.append(folder))
    with fileio.atomic_write(tmp_path / 'a.txt', 'w') as f:
        f.write('x')
    with fileio.atomic_path(tmp_path / 'b.txt') as p:
        open(p, 'w').write('y')
    assert synced == [str(tmp_path)] * 2


def test_json_safe_writes_standard_json(tmp_path):
    path = tmp_path / 'r.json'
    runrecord.write_json(str(path), {'a': float('inf'), 'b': [numpy.float32(1.5), float('nan')],
                                     'c': numpy.arange(2)})
    text = path.read_text()
    assert 'Infinity' not in text and 'NaN' not in text
    assert json.loads(text) == {'a': None, 'b': [1.5, None], 'c': [0, 1]}


def _strict_json(path):
    def refuse(name):
        raise ValueError('non-standard JSON constant ' + name)
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_resume_refuses_another_runs_snapshots(tmp_path, capsys, mnist_data, monkeypatch):
    out = str(tmp_path)
    assert cli.main(SMALL + ['--out', out, '--n-timing', str(10 ** 12)]) == 0
    results = _strict_json(tmp_path / '_results' / 'lenet_mnist_results.json')
    assert results['data']['n_timing'] == 40  # what was timed, not what was asked
    capsys.readouterr()
    assert cli.main(SMALL + ['--out', out, '--resume', '--seed', '7']) == 2
    assert 'other settings (run_seed: the snapshot has 0, this run 7' in capsys.readouterr().err
    assert cli.main(SMALL + ['--out', out, '--resume', '--n-train', '250']) == 2
    assert 'n_train: the snapshot has 300, this run 250' in capsys.readouterr().err
    # a fresh run interrupted in its main phase must not later pick up the old joint snapshot
    joint = tmp_path / '_models' / 'lenet_mnist.joint.snapshot.npz'
    assert joint.exists()
    real_train = training.train_exits

    def interrupted_main(net, x, y, main=False, **kwargs):
        if main:
            raise checkpoint.TrainingInterrupted(kwargs['snapshot'])
        return real_train(net, x, y, main=main, **kwargs)
    monkeypatch.setattr(training, "train_exits", interrupted_main)
    assert cli.main(SMALL + ['--out', out]) == 130
    assert not joint.exists()
    assert 'removed the older joint snapshot' in capsys.readouterr().out
