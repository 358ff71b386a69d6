"""The Table I report reads regular results files of bounded size only, and
a threshold of inf (null in standard JSON) is a table cell, not a crash."""
import json
import os
import subprocess
import sys

import pytest

from branchynet.reporting import report
from tests.helpers import results_record

from tests.helpers import ROOT  # noqa: E402


def _good(folder):
    (folder / 'lenet_mnist_results.json').write_text(json.dumps(
        results_record('lenet_mnist', 'LeNet', 99.0)))


def _report(folder, *args, timeout=30):
    """The report in its own process: a hang is a timeout, not a stuck suite."""
    try:
        return subprocess.run([sys.executable, '-m', 'branchynet.report', '--results',
                               str(folder)] + list(args), cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail('the report hung on {}'.format(os.listdir(folder)))


def test_a_fifo_named_like_results_is_skipped_not_waited_on(tmp_path):
    _good(tmp_path)
    os.mkfifo(str(tmp_path / 'alex_cifar10_results.json'))
    done = _report(tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'skipping' in done.stderr and 'not a regular file' in done.stderr
    assert '| CPU | B-LeNet |' in done.stdout


def test_a_symlink_to_dev_zero_is_skipped_not_read(tmp_path):
    _good(tmp_path)
    os.symlink('/dev/zero', str(tmp_path / 'alex_cifar10_results.json'))
    done = _report(tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'not a regular file' in done.stderr


def test_a_results_file_above_the_cap_is_skipped_unread(tmp_path, monkeypatch, capsys):
    _good(tmp_path)
    monkeypatch.setattr(report, 'MAX_RESULTS_BYTES', 4096)
    big = tmp_path / 'alex_cifar10_results.json'
    big.write_text(json.dumps(dict(results_record('alex_cifar10', 'AlexNet', 1.0),
                                   padding='x' * 8192)))
    assert report.main(['--results', str(tmp_path)]) == 0
    assert 'above the' in capsys.readouterr().err


def test_json_nested_200000_deep_is_skipped_with_a_warning(tmp_path, capsys):
    _good(tmp_path)
    (tmp_path / 'alex_cifar10_results.json').write_text('[' * 200000 + ']' * 200000)
    assert report.main(['--results', str(tmp_path)]) == 0
    assert 'nested too deeply' in capsys.readouterr().err


def test_a_results_file_holding_a_list_is_skipped(tmp_path, capsys):
    _good(tmp_path)
    (tmp_path / 'alex_cifar10_results.json').write_text('[1, 2]')
    assert report.main(['--results', str(tmp_path)]) == 0
    assert 'not a JSON object' in capsys.readouterr().err


def test_an_infinite_threshold_written_as_null_is_shown_as_inf(tmp_path, capsys):
    from branchynet.io import runrecord
    results = results_record('lenet_mnist', 'LeNet', 99.0)
    results['tables']['CPU'][1].update({'Thrshld. T': [float('inf')],
                                        'Exit (%)': [100.0, 0.0]})
    runrecord.write_json(str(tmp_path / 'lenet_mnist_results.json'), results)
    assert report.main(['--results', str(tmp_path), '--networks', 'lenet_mnist']) == 0
    table = (tmp_path / 'table1.md').read_text()
    assert '| inf | 100.00, 0.00 |' in table


def test_a_requested_network_left_out_of_table_i_is_an_error(tmp_path, capsys):
    _good(tmp_path)
    (tmp_path / 'alex_cifar10_results.json').write_text('{"network": "alex_cifar10"}')
    assert report.main(['--results', str(tmp_path), '--networks',
                        'lenet_mnist,alex_cifar10']) == 1
    assert 'Table I lacks alex_cifar10' in capsys.readouterr().err
