"""Every npz the project loads is read without running code and checked,
array by array, against the link it fills."""
import os
import pickle
import sys

import numpy
import pytest

from branchynet.driver import cli
from branchynet.io import fileio
from branchynet.training import checkpoint
from branchynet.io.safenpz import ModelFileError
from networks import lenet_mnist
from tests.helpers import make_three_exit_net

from tests.helpers import ROOT  # noqa: E402


class _Payload:
    """Unpickling this writes a marker file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, ("open({!r}, 'w').write('ran')".format(self.marker),))


def _evil_npz(tmp_path, kind, net=None):
    marker = str(tmp_path / 'code_ran')
    path = tmp_path / 'model.npz'
    if kind == 'object array':
        good = {k: v for k, v in _saved(tmp_path, net).items()}
        good['trunk/0/W'] = numpy.array([_Payload(marker)], dtype=object)
        numpy.savez(path, **good)
    else:  # a plain pickle named .npz
        with open(path, 'wb') as f:
            pickle.dump(_Payload(marker), f)
    return str(path), marker


def _saved(tmp_path, net=None):
    path = tmp_path / 'good.npz'
    fileio.save_npz(path, net or make_three_exit_net(seed=2))
    with numpy.load(path) as z:
        return {k: z[k] for k in z.files}


def _loaders():
    def model(path):
        fileio.load_npz(path, make_three_exit_net())

    def snapshot(path):
        checkpoint.load(path, make_three_exit_net(), numpy.random.RandomState(0))
    return {'load_npz': model, 'snapshot': snapshot}


@pytest.mark.parametrize('loader', ['load_npz', 'snapshot'])
@pytest.mark.parametrize('kind', ['object array', 'plain pickle'])
def test_loading_a_malicious_npz_runs_no_code(tmp_path, loader, kind):
    path, marker = _evil_npz(tmp_path, kind)
    with pytest.raises(ModelFileError, match=os.path.basename(path)):
        _loaders()[loader](path)
    assert not os.path.exists(marker)


def test_init_with_a_malicious_npz_runs_no_code(tmp_path, capsys):
    path, marker = _evil_npz(tmp_path, 'plain pickle')
    code = cli.main(['--network', 'lenet_mnist', '--preset', 'tiny', '--init', path,
                            '--out', str(tmp_path / 'out'), '--time-devices', 'cpu'])
    assert code == 2 and not os.path.exists(marker)
    assert 'model.npz' in capsys.readouterr().err


def test_benchmark_model_loading_runs_no_code(tmp_path):
    import subprocess
    path, marker = _evil_npz(tmp_path, 'object array', lenet_mnist.get_network())
    # the benchmarks load --model through benchmarks/common.py
    code = ('import sys; sys.path.insert(0, {!r}); from benchmarks import common; '
            'p = common.parser("x"); a = p.parse_args(["--model", {!r}]); common.lenet(a)'
            .format(ROOT, path))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode != 0 and not os.path.exists(marker)
    assert 'object array' in result.stderr and 'Traceback' not in result.stderr


def _write(tmp_path, arrays):
    path = tmp_path / 'w.npz'
    numpy.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize('change, match', [
    (lambda a: a.update({'trunk/0/W': numpy.zeros((1,), numpy.float32)}),
     r"'trunk/0/W' is float32 \(1,\), but this network expects float32 \(4, 1, 3, 3\)"),
    (lambda a: a.update({'trunk/0/W': numpy.full((4, 1, 3, 3), numpy.nan, numpy.float32)}),
     r"'trunk/0/W' contains NaN or infinite values"),
    (lambda a: a.update({'trunk/0/b': numpy.full(4, numpy.inf, numpy.float32)}),
     r"'trunk/0/b' contains NaN or infinite values"),
    (lambda a: a.update({'trunk/0/W': a['trunk/0/W'].astype(numpy.float64)}),
     r"is float64 \(4, 1, 3, 3\), but this network expects float32"),
    (lambda a: a.update({'trunk/0/W': numpy.array('text')}), r"has dtype <U4; expected numbers"),
    (lambda a: a.pop('trunk/0/W'), r"has no entry 'trunk/0/W'"),
    (lambda a: a.update({'trunk/9/W': numpy.zeros(3, numpy.float32)}),
     r'has entries this network lacks \(trunk/9/W\)'),
])
def test_each_array_is_checked_against_the_link_it_fills(tmp_path, change, match):
    arrays = _saved(tmp_path)
    change(arrays)
    path = _write(tmp_path, arrays)
    net = make_three_exit_net(seed=4)
    before = {k: p.array.copy() for k, p in net.namedparams()}
    with pytest.raises(ModelFileError, match=match):
        fileio.load_npz(path, net)
    assert 'w.npz' in str(pytest.raises(ModelFileError, fileio.load_npz, path,
                                        make_three_exit_net()).value)
    if 'lacks' not in match:  # the check comes before the copy
        for k, p in net.namedparams():
            if k.startswith('/trunk/0'):
                numpy.testing.assert_array_equal(p.array, before[k])


@pytest.mark.parametrize('content, match', [
    (None, 'is a folder'),
    (b'', 'is not a BranchyNet weights file'),
    (b'PK\x03\x04garbage', 'is not a BranchyNet weights file'),
    ('truncated', 'truncated|not a BranchyNet weights file|unreadable'),
    ('npy', r'single array \(.npy\)'),
    # the first mismatching entry is named; Chainer visits a link's parameters in set
    # order (it varies between runs with the string hash seed), so W or b
    ('other network', r"expects float32 \((4, 1, 3, 3|4,)\)|has no entry"),
])
def test_damaged_or_foreign_files_name_the_file(tmp_path, content, match):
    path = tmp_path / 'm.npz'
    if content is None:
        path.mkdir()
    elif content == 'truncated':
        fileio.save_npz(path, make_three_exit_net())
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif content == 'npy':
        with open(path, 'wb') as f:
            numpy.save(f, numpy.zeros(3))
    elif content == 'other network':
        fileio.save_npz(path, lenet_mnist.get_network())
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match) as info:
        fileio.load_npz(path, make_three_exit_net())
    assert 'm.npz' in str(info.value)


def test_a_good_file_still_round_trips(tmp_path):
    a, b = make_three_exit_net(seed=1), make_three_exit_net(seed=2)
    fileio.save_npz(tmp_path / 'a.npz', a)
    fileio.load_npz(tmp_path / 'a.npz', b)
    for (k, p), (_, q) in zip(sorted(a.namedparams()), sorted(b.namedparams())):
        numpy.testing.assert_array_equal(p.array, q.array, err_msg=k)


def test_a_snapshot_of_another_network_names_the_file(tmp_path):
    path = str(tmp_path / 'other.snapshot.npz')
    checkpoint.save(path, lenet_mnist.get_network(), numpy.random.RandomState(0), 0, [], [])
    net = make_three_exit_net()
    with pytest.raises(ModelFileError, match='other.snapshot.npz'):
        checkpoint.load(path, net, numpy.random.RandomState(0))
