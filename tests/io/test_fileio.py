"""Saving models (dill as the original, npz as the safe form) and atomic writes."""
import os
import subprocess
import sys

import numpy
import pytest

from branchynet.io import fileio
from networks import lenet_mnist

from tests.helpers import ROOT  # noqa: E402


@pytest.fixture(scope='module')
def trained_lenet():
    rng = numpy.random.RandomState(0)
    x = rng.rand(64, 1, 28, 28).astype(numpy.float32)
    t = rng.randint(0, 10, 64).astype(numpy.int32)
    net = lenet_mnist.get_network()
    net.train_main(x, t)
    net.train(x, t)
    return net, x


def test_dill_round_trip_in_a_fresh_process(tmp_path, trained_lenet):
    net, x = trained_lenet
    model, xfile, out = tmp_path / 'm.bn', tmp_path / 'x.npy', tmp_path / 'sm.npz'
    fileio.save_dill(model, net)
    numpy.save(xfile, x)
    code = ('import numpy, sys; from branchynet.io import fileio; '
            'net = fileio.load_dill(sys.argv[1], trust=True); '
            'sm = net.get_SM(numpy.load(sys.argv[2])); '
            'numpy.savez(sys.argv[3], *sm)')
    subprocess.run([sys.executable, '-c', code, str(model), str(xfile), str(out)],
                   check=True, cwd=ROOT)
    loaded = numpy.load(out)
    for n, sm in enumerate(net.get_SM(x)):
        numpy.testing.assert_array_equal(loaded['arr_{}'.format(n)], sm)


def test_npz_round_trip(tmp_path, trained_lenet):
    net, x = trained_lenet
    fileio.save_npz(tmp_path / 'm.npz', net)
    fresh = lenet_mnist.get_network()
    fileio.load_npz(tmp_path / 'm.npz', fresh)
    for a, b in zip(net.get_SM(x), fresh.get_SM(x)):
        numpy.testing.assert_array_equal(a, b)


def test_dill_loading_needs_an_explicit_opt_in(tmp_path, trained_lenet):
    fileio.save_dill(tmp_path / 'm.bn', trained_lenet[0])
    with pytest.raises(PermissionError, match='trust=True'):
        fileio.load_dill(tmp_path / 'm.bn')


def test_truncated_or_foreign_model_files_give_clear_errors(tmp_path, trained_lenet):
    fileio.save_dill(tmp_path / 'm.bn', trained_lenet[0])
    data = (tmp_path / 'm.bn').read_bytes()
    (tmp_path / 'cut.bn').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='not a readable BranchyNet model'):
        fileio.load_dill(tmp_path / 'cut.bn', trust=True)
    (tmp_path / 'foreign.npz').write_bytes(b'not an npz at all')
    with pytest.raises(ValueError, match='foreign.npz is not a BranchyNet weights file'):
        fileio.load_npz(tmp_path / 'foreign.npz', lenet_mnist.get_network())


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / 'result.txt'
    target.write_text('old')
    with pytest.raises(RuntimeError):
        with fileio.atomic_write(target, 'w') as f:
            f.write('half of the new')
            raise RuntimeError('crash while writing')
    assert target.read_text() == 'old'
    assert os.listdir(tmp_path) == ['result.txt']


def test_atomic_write_keeps_the_old_file_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / 'model.npz'
    target.write_bytes(b'old model')

    def failing_replace(src, dst):
        raise OSError('disk full')
    monkeypatch.setattr(fileio.os, 'replace', failing_replace)
    with pytest.raises(OSError, match='disk full'):
        fileio.save_npz(target, lenet_mnist.get_network())
    assert target.read_bytes() == b'old model'
    assert os.listdir(tmp_path) == ['model.npz']


@pytest.mark.parametrize('kind, reason', [
    ('deep', 'JSON nested too deeply'),
    ('fifo', 'not a regular file'),
    ('zero', 'not a regular file'),
])
def test_read_json_refuses_what_is_no_small_record(tmp_path, kind, reason):
    from tests.helpers import untrusted_record
    untrusted_record(tmp_path / 'r.json', kind)
    with pytest.raises(ValueError, match=reason):
        fileio.read_json(str(tmp_path / 'r.json'))


def test_read_json_refuses_a_large_file_unread(tmp_path):
    path = tmp_path / 'r.json'
    path.write_text('[' + '0,' * 100 + '0]')
    assert fileio.read_json(str(path)) == [0] * 101
    with pytest.raises(ValueError, match='more than the 100 it may have'):
        fileio.read_json(str(path), max_bytes=100)
