"""get_results.sh and the Table I report: bad network lists are refused, a
failed network never brings older runs' results into the table, and a
damaged or missing results file is a message, not a crash."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from branchynet import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _results(network, title, acc):
    row = {'Device': 'CPU', 'Network': title, 'Acc. (%)': acc, 'Time (ms)': 1.0}
    return {'network': network, 'title': title, 'seed': 0,
            'config': {'preset': 'tiny', 'epochs_main': 1, 'epochs_joint': 1, 'batchsize': 8,
                       'dataset': 'mnist'},
            'data': {'n_train': 10, 'n_test': 10, 'n_timing': 10},
            'training': {'epoch_seconds_main': 1.0, 'epoch_seconds_joint': 1.0},
            'test': {'exit_accs_after_joint': [0.5]}, 'environment': {'python': '3'},
            'tables': {'CPU': [row, dict(row, Network='B-' + title)]}}


def test_a_damaged_results_file_is_skipped_with_a_warning(tmp_path, capsys):
    (tmp_path / 'lenet_mnist_results.json').write_text(json.dumps(
        _results('lenet_mnist', 'LeNet', 99.0)))
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


@pytest.fixture
def sandbox(tmp_path):
    """A copy of get_results.sh whose python runs a stub driver: LeNet
    succeeds (writing results), AlexNet fails; the report is the real one."""
    for name in ('get_results.sh', 'pyproject.toml'):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    shutil.copytree(os.path.join(ROOT, 'tools'), tmp_path / 'tools')
    shutil.copytree(os.path.join(ROOT, 'requirements'), tmp_path / 'requirements')
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    stamps = [subprocess.run(
        'cat requirements/base.txt {} requirements/*.txt pyproject.toml | sha256sum | cut -c1-16'
        .format(extra), shell=True, cwd=tmp_path, capture_output=True, text=True,
        check=True).stdout.strip() for extra in ('', 'requirements/mpi.txt')]
    (venv / '.branchynet-stamps').write_text('\n'.join(stamps) + '\n')  # base; base + mpi
    fake = tmp_path / 'fake_driver.py'
    fake.write_text(
        'import json, sys\n'
        'net = sys.argv[sys.argv.index("--network") + 1]\n'
        'if net == "alex_cifar10":\n'
        '    sys.exit("error: it failed")\n'
        'json.dump({}, open("_results/%s_results.json" % net, "w"))\n'.format(
            json.dumps(_results('lenet_mnist', 'LeNet', 99.0))))
    python = venv / 'bin' / 'python'
    python.write_text('#!/bin/sh\n'
                      'if [ "$2" = branchynet.experiment ]; then\n'
                      '  shift 2; exec {py} {fake} "$@"\n'
                      'fi\n'
                      'PYTHONPATH={root} exec {py} "$@"\n'.format(
                          py=sys.executable, fake=fake, root=ROOT))
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, BRANCHYNET_VENV=str(venv))
    return tmp_path, env


def _run(sandbox, *args):
    folder, env = sandbox
    return subprocess.run(['bash', 'get_results.sh'] + list(args), cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('networks, match', [
    (',,,', "names no network"),
    ('lenet_mnist --seed 5', "unknown network 'lenet_mnist --seed 5'"),
    ('lenet_mnist,vgg', "unknown network 'vgg'"),
])
def test_bad_network_lists_are_refused(sandbox, networks, match):
    result = _run(sandbox, '--networks', networks)
    assert result.returncode == 2 and match in result.stderr
    assert not (sandbox[0] / '_results').exists()


def test_a_failed_network_leaves_older_results_out_of_the_table(sandbox):
    folder = sandbox[0]
    (folder / '_results').mkdir()
    (folder / '_results' / 'alex_cifar10_results.json').write_text(json.dumps(
        _results('alex_cifar10', 'OldAlexNet', 70.0)))
    result = _run(sandbox, '--networks', 'lenet_mnist,alex_cifar10')
    assert result.returncode == 1 and 'failed: alex_cifar10' in result.stderr
    table = (folder / '_results' / 'table1.md').read_text()
    assert 'B-LeNet' in table and 'OldAlexNet' not in table


def test_mpi_runs_the_driver_under_mpiexec(sandbox):
    """--mpi N [--hostfile F] starts every network as mpiexec -n N [-hostfile F]
    python -m branchynet.experiment --distributed ..."""
    folder, env = sandbox
    calls = folder / 'mpiexec_calls'
    mpiexec = folder / 'fake_mpiexec'
    mpiexec.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> {}\nshift 2\n'
                       '[ "$1" = -hostfile ] && shift 2\nexec "$@"\n'.format(calls))
    mpiexec.chmod(mpiexec.stat().st_mode | stat.S_IEXEC)
    (folder / 'hosts').write_text('localhost:2\n')
    env = dict(env, MPIEXEC=str(mpiexec))
    result = subprocess.run(['bash', 'get_results.sh', '--networks', 'lenet_mnist', '--mpi',
                             '3', '--hostfile', 'hosts'], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '3 MPI ranks' in result.stdout
    line = calls.read_text().strip()
    assert line.startswith('-n 3 -hostfile hosts ') and line.endswith(
        '-m branchynet.experiment --distributed --network lenet_mnist --preset fast '
        '--device auto --seed 0 --out .'), line
    assert 'B-LeNet' in (folder / '_results' / 'table1.md').read_text()


@pytest.mark.parametrize('args, match', [
    (['--mpi', '0'], "--mpi needs a positive number of ranks, got '0'"),
    (['--mpi', 'two'], "--mpi needs a positive number of ranks, got 'two'"),
    (['--hostfile', 'hosts'], '--hostfile needs --mpi N'),
    (['--mpi', '2', '--hostfile', 'nowhere'], "--hostfile 'nowhere' is not a file"),
])
def test_bad_mpi_options_are_refused(sandbox, args, match):
    result = _run(sandbox, '--networks', 'lenet_mnist', *args)
    assert result.returncode == 2 and match in result.stderr
    assert not (sandbox[0] / '_results').exists()
