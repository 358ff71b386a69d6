"""The driver's --place-exits: a placement report beside the hand placement."""
import json

import pytest

from branchynet.driver import cli, run as experiment
from tests.helpers import random_dataset_npz


def _npz(tmp_path):
    return random_dataset_npz(tmp_path / 'digits.npz', 96, n_test=30)


@pytest.mark.slow
def test_place_exits_option_writes_the_report(tmp_path):
    results = experiment.run('lenet_mnist', preset='tiny', out_dir=str(tmp_path),
                             overrides={'dataset_path': _npz(tmp_path), 'n_val': 24,
                                        'place_exits': 1, 'engines': ('chainer', 'fast')},
                             time_devices=['cpu'])
    placement = results['placement']
    assert len(placement['chosen']['points']) <= 1 and placement['hand']['points'] == [1]
    saved = json.loads((tmp_path / '_results' / 'lenet_mnist_placement.json').read_text())
    assert saved['settings']['engine'] == 'fast'
    assert (tmp_path / '_figs' / 'lenet_mnist_placement.png').exists()
    assert '| boundary |' in (tmp_path / '_results' / 'lenet_mnist_placement.md').read_text()


def test_place_exits_option_refuses_nonsense(capsys):
    assert cli.main(['--network', 'lenet_mnist', '--place-exits', '0']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--place-exits must be' in err[0]
