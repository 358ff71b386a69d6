"""The driver's --place-exits: a placement report beside the hand placement."""
import json

import numpy
import pytest

from branchynet.driver import cli, run as experiment


def _npz(tmp_path):
    from datasets import npz
    rng = numpy.random.RandomState(0)
    path = str(tmp_path / 'digits.npz')
    npz.save(path, rng.rand(96, 1, 28, 28).astype(numpy.float32),
             rng.randint(0, 10, 96).astype(numpy.int32),
             rng.rand(30, 1, 28, 28).astype(numpy.float32),
             rng.randint(0, 10, 30).astype(numpy.int32))
    return path


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
