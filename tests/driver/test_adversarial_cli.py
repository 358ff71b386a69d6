"""Command-line faults: bad seeds, nothing to train, a network named twice,
signals outside training and a full disk give one line and an exit status,
never a traceback, a left lock or a silently meaningless table."""
import gc
import io
import os
import subprocess
import sys
import textwrap

import numpy
import pytest

from branchynet.driver import cli, run as experiment
from branchynet.io import fileio
from branchynet.training import checkpoint
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net

from tests.helpers import ROOT  # noqa: E402
TINY = ['--network', 'lenet_mnist', '--preset', 'tiny', '--time-devices', 'cpu']


@pytest.mark.parametrize('seed', ['4294967296', '4294967295', '1e20', '-1'])
def test_a_seed_numpy_cannot_take_is_one_line(tmp_path, capsys, seed):
    with pytest.raises(SystemExit) as info:
        cli.main(TINY + ['--out', str(tmp_path / 'out'), '--seed', seed])
    assert info.value.code == 2
    assert 'argument --seed: must be an integer in 0..4294967294' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_the_api_refuses_a_seed_out_of_range(tmp_path):
    with pytest.raises(InputError, match='--seed must be an integer in 0..4294967294'):
        experiment.run('lenet_mnist', 'tiny', out_dir=str(tmp_path), seed=2 ** 32)


def test_no_epochs_and_no_init_is_refused(tmp_path, capsys):
    code = cli.main(TINY + ['--out', str(tmp_path / 'out'), '--epochs-main', '0',
                                   '--epochs-joint', '0'])
    assert code == 2
    assert 'trains nothing' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_a_network_named_twice_is_refused(tmp_path, capsys):
    code = cli.main(['--networks', 'lenet_mnist,alex_cifar10,lenet_mnist', '--out',
                            str(tmp_path / 'out')])
    assert code == 2
    assert '--networks names lenet_mnist twice' in capsys.readouterr().err


def test_ctrl_c_outside_training_is_one_line_and_releases_the_lock(tmp_path, monkeypatch,
                                                                    capsys):
    def screening(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, '_run_locked', screening)
    assert cli.main(TINY + ['--out', str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert 'interrupted (SIGINT) while not training lenet_mnist' in err
    assert 'Traceback' not in err
    assert not (tmp_path / fileio.RunLock.NAME).exists()


def test_sigterm_outside_training_releases_the_lock(tmp_path):
    script = textwrap.dedent('''
        import os, signal, sys, time
        sys.path.insert(0, {root!r})
        from branchynet.driver import cli, run as experiment

        def screening(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        experiment._run_locked = screening
        sys.exit(cli.main({args!r}))
    ''').format(root=ROOT, args=TINY + ['--out', str(tmp_path)])
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 143, done.stderr[-2000:]
    assert 'interrupted (SIGTERM)' in done.stderr and 'Traceback' not in done.stderr
    assert not (tmp_path / fileio.RunLock.NAME).exists()


class _FullDisk(io.FileIO):
    def write(self, data):
        raise OSError(28, 'No space left on device')


@pytest.fixture
def full_disk(monkeypatch):
    """Every ``atomic_write`` fails as on a full disk; collects what Python
    would print as "Exception ignored"."""
    monkeypatch.setattr(fileio, 'open', lambda path, mode='r': _FullDisk(path, 'w'),
                        raising=False)
    ignored = []
    monkeypatch.setattr(sys, 'unraisablehook', ignored.append)
    return ignored


@pytest.mark.parametrize('write', [
    lambda path: checkpoint.save(path, make_three_exit_net(), numpy.random.RandomState(0), 0,
                                 [], []),
    lambda path: fileio.save_npz(path, make_three_exit_net()),
])
def test_a_full_disk_names_the_file_and_leaves_no_ignored_exception(tmp_path, full_disk,
                                                                    write):
    path = str(tmp_path / 'model.npz')
    try:
        write(path)
    except OSError as e:
        filename = e.filename
    else:
        pytest.fail('the write did not fail')
    assert filename == path
    gc.collect()  # the failed writer's frames are gone: any ZipFile left is collected
    assert full_disk == [] and os.listdir(str(tmp_path)) == []
