"""get_results.sh, the driver's network list and the Table I report: the
script only sets up and delegates, bad network lists are refused, a failed
network never brings older runs' results into the table, --mpi starts the
ranks, and a damaged or missing results file is a message, not a crash."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from branchynet.driver import cli, run as experiment
from branchynet.reporting import report

from tests.helpers import ROOT, results_record  # noqa: E402


def test_a_damaged_results_file_is_skipped_with_a_warning(tmp_path, capsys):
    (tmp_path / 'lenet_mnist_results.json').write_text(json.dumps(
        results_record('lenet_mnist', 'LeNet', 99.0)))
    (tmp_path / 'alex_cifar10_results.json').write_text('{"network": "alex_cifar10", "ti')
    (tmp_path / 'resnet_cifar10_results.json').write_text('{"network": "resnet_cifar10"}')
    assert report.main(['--results', str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert 'skipping' in err and 'alex_cifar10_results.json' in err
    assert 'resnet_cifar10_results.json' in err
    assert '| CPU | B-LeNet |' in out


def test_a_missing_results_folder_is_an_error_and_creates_nothing(tmp_path, capsys):
    assert report.main(['--results', str(tmp_path / 'typo')]) == 2
    assert 'no such folder' in capsys.readouterr().err
    assert not (tmp_path / 'typo').exists()
    assert report.main(['--results', str(tmp_path)]) == 2
    assert 'no readable *_results.json' in capsys.readouterr().err
    assert not (tmp_path / 'table1.md').exists()


def _fake(folder, name, body):
    path = folder / name
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_get_results_sets_up_and_hands_every_option_to_the_driver(tmp_path):
    """With BRANCHYNET_PYTHON set nothing is installed; the script runs the
    driver with a full run's defaults followed by the user's options."""
    for name in ('get_results.sh', 'pyproject.toml'):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    shutil.copytree(os.path.join(ROOT, 'tools'), tmp_path / 'tools')
    python = _fake(tmp_path, 'python', 'printf "%s|" "$@" > {}/args\n'.format(tmp_path))
    env = dict(os.environ, BRANCHYNET_PYTHON=str(python))
    for args in (['--help'], ['--paper', '--networks', 'lenet_mnist', '--mpi', '2']):
        subprocess.run(['bash', 'get_results.sh'] + args, cwd=tmp_path, env=env, check=True,
                       timeout=60)
        passed = (tmp_path / 'args').read_text().split('|')[:-1]
        assert passed == ['-m', 'branchynet.experiment', '--networks', 'all', '--device',
                          'auto', '--out', '.'] + args


def test_the_drivers_help_lists_every_option():
    text = cli.build_parser().format_help()
    for option in ('--paper', '--preset', '--networks', '--device', '--seed', '--dataset',
                   '--resume', '--mpi', '--hostfile', '--time-devices'):
        assert option in text


def _stub_run(monkeypatch):
    """experiment.run replaced: LeNet writes its results, AlexNet has a bug."""
    calls = []

    def run(network, preset, device, out, *args, **kwargs):
        calls.append(network)
        if network == 'alex_cifar10':
            raise RuntimeError('a bug in this network')
        print('training', network)
        with open(os.path.join(out, '_results', network + '_results.json'), 'w') as f:
            json.dump(results_record('lenet_mnist', 'LeNet', 99.0), f)
    monkeypatch.setattr(experiment, 'run', run)
    return calls


@pytest.mark.parametrize('networks, match', [
    (',,,', "names no network"),
    ('lenet_mnist --seed 5', "unknown network 'lenet_mnist --seed 5'"),
    ('lenet_mnist,vgg', "unknown network 'vgg'"),
])
def test_bad_network_lists_are_refused(tmp_path, capsys, monkeypatch, networks, match):
    calls = _stub_run(monkeypatch)
    assert cli.main(['--networks', networks, '--out', str(tmp_path)]) == 2
    assert match in capsys.readouterr().err
    assert not calls and not (tmp_path / '_results').exists()


def test_a_failed_network_leaves_older_results_out_of_the_table(tmp_path, capsys,
                                                                 monkeypatch):
    calls = _stub_run(monkeypatch)
    (tmp_path / '_results').mkdir()
    (tmp_path / '_results' / 'alex_cifar10_results.json').write_text(json.dumps(
        results_record('alex_cifar10', 'OldAlexNet', 70.0)))
    code = cli.main(['--networks', 'alex_cifar10,lenet_mnist', '--out', str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1 and calls == ['alex_cifar10', 'lenet_mnist']  # the bug stops only AlexNet
    assert 'RuntimeError: a bug in this network' in err and 'failed: alex_cifar10' in err
    table = (tmp_path / '_results' / 'table1.md').read_text()
    assert 'B-LeNet' in table and 'OldAlexNet' not in table
    # each network's output is in its log as well
    assert 'training lenet_mnist' in (tmp_path / '_results' / 'lenet_mnist.log').read_text()
    assert 'a bug in this network' in (tmp_path / '_results' / 'alex_cifar10.log').read_text()


def test_mpi_starts_the_driver_under_mpiexec(tmp_path, monkeypatch):
    """--mpi N [--hostfile F]: mpiexec -n N [-hostfile F] python -m
    branchynet.driver.run --distributed <the other options>; its exit status."""
    calls = tmp_path / 'mpiexec_calls'
    mpiexec = _fake(tmp_path, 'mpiexec', 'printf "%s\n" "$*" > {}\nexit 3\n'.format(calls))
    (tmp_path / 'hosts').write_text('localhost:2\n')
    monkeypatch.setenv('MPIEXEC', str(mpiexec))
    hosts = str(tmp_path / 'hosts')
    assert cli.main(['--networks', 'lenet_mnist', '--mpi', '3', '--hostfile', hosts,
                            '--seed', '4']) == 3
    assert calls.read_text().strip() == (
        '-n 3 -hostfile {} {} -m branchynet.experiment --distributed --networks lenet_mnist '
        '--seed 4'.format(hosts, sys.executable))


@pytest.mark.parametrize('args, match', [
    (['--mpi', '0'], '--mpi needs a positive number of ranks, got 0'),
    (['--mpi', 'two'], "invalid int value: 'two'"),
    (['--hostfile', 'hosts'], '--hostfile needs --mpi N'),
    (['--mpi', '2', '--hostfile', 'nowhere'], "--hostfile 'nowhere' is not a file"),
    (['--mpi', '2', '--distributed'], '--distributed is for a command already started'),
])
def test_bad_mpi_options_are_refused(tmp_path, capsys, monkeypatch, args, match):
    calls = _stub_run(monkeypatch)
    monkeypatch.setenv('MPIEXEC', str(_fake(tmp_path, 'mpiexec', 'exit 0\n')))
    try:
        code = cli.main(['--networks', 'lenet_mnist', '--out', str(tmp_path)] + args)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2 and match in capsys.readouterr().err
    assert not calls and not (tmp_path / '_results').exists()


def test_the_launchers_signal_and_name_are_handled(tmp_path, monkeypatch, capsys):
    # a launcher killed by SIGTERM: exit status 128 + 15, as a shell reports it
    monkeypatch.setenv('MPIEXEC', str(_fake(tmp_path, 'mpiexec', 'kill -TERM $$\n')))
    assert cli.main(['--networks', 'lenet_mnist', '--mpi', '2']) == 143
    # MPIEXEC may name a command on PATH; an unknown one is refused, not ignored
    _fake(tmp_path, 'mpirun-here', 'exit 0\n')
    monkeypatch.setenv('PATH', str(tmp_path) + os.pathsep + os.environ['PATH'])
    monkeypatch.setenv('MPIEXEC', 'mpirun-here')
    assert cli.main(['--networks', 'lenet_mnist', '--mpi', '2']) == 0
    monkeypatch.setenv('MPIEXEC', 'no-such-launcher')
    assert cli.main(['--networks', 'lenet_mnist', '--mpi', '2']) == 2
    assert "MPIEXEC='no-such-launcher' is not a command" in capsys.readouterr().err


def test_logs_are_appended_so_a_refused_run_keeps_the_first_ones(tmp_path, monkeypatch):
    _stub_run(monkeypatch)
    args = ['--networks', 'lenet_mnist', '--out', str(tmp_path)]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    log = (tmp_path / '_results' / 'lenet_mnist.log').read_text()
    assert log.count('training lenet_mnist') == 2 and log.count('\n--- ') == 2
