"""Every npz entry's header (shape, dtype, size) is checked before the entry
is decompressed, and only the entries a reader needs are read."""
import io
import zipfile

import numpy
import pytest

from branchynet import utils
from branchynet.io import fileio
from branchynet.training import checkpoint
from branchynet.io.safenpz import ModelFileError
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net


def _npy_header(shape, dtype=numpy.float32):
    buf = io.BytesIO()
    numpy.lib.format.write_array_header_1_0(
        buf, {'descr': numpy.lib.format.dtype_to_descr(numpy.dtype(dtype)),
              'fortran_order': False, 'shape': tuple(shape)})
    return buf.getvalue()


def _rewrite(path, replace):
    """Rewrite the npz at ``path``; ``replace`` maps entry names to raw member
    bytes (None deletes the entry)."""
    with zipfile.ZipFile(str(path)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for key, data in replace.items():
        members.pop(key + '.npy', None)
        if data is not None:
            members[key + '.npy'] = data
    with zipfile.ZipFile(str(path), 'w', zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.fixture
def reads(monkeypatch):
    """The entries read from any npz (``NpzFile.__getitem__``)."""
    seen = []
    real = numpy.lib.npyio.NpzFile.__getitem__

    def getitem(self, key):
        seen.append(key)
        return real(self, key)
    monkeypatch.setattr(numpy.lib.npyio.NpzFile, '__getitem__', getitem)
    return seen


def test_a_declared_shape_of_10_12_is_refused_not_a_memory_error(tmp_path):
    path = tmp_path / 'w.npz'
    fileio.save_npz(str(path), make_three_exit_net())
    _rewrite(path, {'trunk/0/W': _npy_header((10 ** 12,)) + bytes(4096)})
    with pytest.raises(ModelFileError, match=r"'trunk/0/W' .*1000000000000"):
        fileio.load_npz(str(path), make_three_exit_net())


def test_a_weight_entry_inflating_past_its_parameter_is_never_decompressed(tmp_path, reads):
    path = tmp_path / 'w.npz'
    fileio.save_npz(str(path), make_three_exit_net())
    n = 16 * 2 ** 20  # 64 MiB of zeros: a few kB compressed
    _rewrite(path, {'trunk/0/W': _npy_header((n,)) + bytes(4 * n)})
    assert path.stat().st_size < 2 ** 20
    with pytest.raises(ModelFileError, match=r"'trunk/0/W' is float32 \(16777216,\), but this "
                                             r"network expects float32 \(4, 1, 3, 3\)"):
        fileio.load_npz(str(path), make_three_exit_net())
    assert 'trunk/0/W' not in reads


def test_a_truncated_entry_is_refused_from_its_header(tmp_path):
    path = tmp_path / 'w.npz'
    fileio.save_npz(str(path), make_three_exit_net())
    _rewrite(path, {'trunk/0/W': _npy_header((4, 1, 3, 3)) + bytes(10)})
    with pytest.raises(ModelFileError, match=r"declares float32 \(4, 1, 3, 3\) \(144 bytes\) "
                                             r"but holds"):
        fileio.load_npz(str(path), make_three_exit_net())


def test_a_non_npy_member_is_refused_unread(tmp_path, reads):
    path = tmp_path / 'w.npz'
    fileio.save_npz(str(path), make_three_exit_net())
    with zipfile.ZipFile(str(path), 'a') as z:
        z.writestr('trunk/0/W', b'\0' * 1000)
    _rewrite(path, {'trunk/0/W': None})
    with pytest.raises(ModelFileError, match="'trunk/0/W' is not a readable array"):
        fileio.load_npz(str(path), make_three_exit_net())
    assert 'trunk/0/W' not in reads


def _snapshot(path):
    rng = numpy.random.RandomState(0)
    x = rng.randn(40, 1, 8, 8).astype(numpy.float32)
    y = rng.randint(0, 5, 40).astype(numpy.int32)
    utils.train_exits(make_three_exit_net(), x, y, batchsize=8, num_epoch=1, progress=False,
                      snapshot=str(path))
    return x, y


@pytest.mark.parametrize('key, shape, dtype', [
    ('order', (2 ** 24,), numpy.int64),
    ('losses', (1, 2 ** 22), numpy.float64),
    ('optimizer/trunk/0/W/v', (2 ** 24,), numpy.float32),
    ('optimizer/trunk/0/W/m', (2 ** 24,), numpy.float32),
    ('optimizer/branches/0/1/W/m', (5, 256, 2 ** 12), numpy.float32),
    ('settings', (), numpy.dtype('U300000')),
])
def test_a_snapshot_entry_larger_than_the_run_needs_is_never_read(tmp_path, reads, key, shape,
                                                                   dtype):
    snap = tmp_path / 's.npz'
    x, y = _snapshot(snap)
    size = int(numpy.prod(shape)) * numpy.dtype(dtype).itemsize
    _rewrite(snap, {key: _npy_header(shape, dtype) + bytes(size)})
    with pytest.raises(InputError, match=repr(key)):
        utils.train_exits(make_three_exit_net(), x, y, batchsize=8, num_epoch=2, progress=False,
                          snapshot=str(snap), resume=True, settings={})
    assert key not in reads


def test_snapshot_curves_are_bounded_by_the_runs_epochs_before_they_are_read(tmp_path, reads):
    """A forged epoch count must not raise the curves' bound: 2 ** 40 epochs
    would allow terabytes."""
    snap = tmp_path / 's.npz'
    x, y = _snapshot(snap)
    rows = 2 ** 20
    _rewrite(snap, {'epoch': _npy_header((), numpy.int64) + numpy.int64(2 ** 40).tobytes(),
                    'losses': _npy_header((rows, 3), numpy.float64) + bytes(24 * rows),
                    'accs': _npy_header((rows, 3), numpy.float64) + bytes(24 * rows)})
    with pytest.raises(InputError, match='at epoch 1099511627776 of a 2-epoch run'):
        utils.train_exits(make_three_exit_net(), x, y, batchsize=8, num_epoch=2, progress=False,
                          snapshot=str(snap), resume=True, settings={})
    assert 'losses' not in reads and 'accs' not in reads


@pytest.mark.parametrize('key, member', [
    # a measure name is a short string: 10 ** 6 characters are never read
    ('_exit_rule/measure', _npy_header((), numpy.dtype('U1000000')) + bytes(4 * 10 ** 6)),
    # thresholds: one per early exit (2 here), not 10 ** 6
    ('_exit_rule/thresholds', _npy_header((10 ** 6,), numpy.float64) + bytes(8 * 10 ** 6)),
], ids=['measure', 'thresholds'])
def test_a_weights_files_exit_rule_is_bounded_before_it_is_read(tmp_path, reads, key, member):
    path = tmp_path / 'w.npz'
    net = make_three_exit_net()
    net.thresholdExits = [0.1, 0.2]
    fileio.save_npz(str(path), net)
    _rewrite(path, {key: member})
    with pytest.raises(ModelFileError, match=repr(key)):
        fileio.load_npz(str(path), make_three_exit_net())
    assert key not in reads


def _dataset(path, **extra):
    rng = numpy.random.RandomState(0)
    arrays = {'train_x': rng.rand(20, 1, 8, 8).astype(numpy.float32),
              'train_y': rng.randint(0, 5, 20).astype(numpy.int32),
              'test_x': rng.rand(10, 1, 8, 8).astype(numpy.float32),
              'test_y': rng.randint(0, 5, 10).astype(numpy.int32)}
    numpy.savez_compressed(str(path), **arrays, **extra)


def test_dataset_loading_reads_only_its_four_entries(tmp_path, reads):
    from datasets import npz
    path = tmp_path / 'd.npz'
    _dataset(path, junk=numpy.zeros(2 ** 24, numpy.float32))  # 64 MiB, ~65 kB compressed
    x_train, _, x_test, _ = npz.load(str(path))
    assert sorted(reads) == sorted(npz.KEYS) and len(x_train) == 20 and len(x_test) == 10


@pytest.mark.parametrize('replace, match', [
    ({'train_y': _npy_header((21,), numpy.int32) + bytes(84)},
     r'train_y must have one label per sample: 20 samples in train_x but train_y has shape'),
    ({'test_x': _npy_header((10, 3, 8, 8)) + bytes(7680)},
     r'train_x samples are \(1, 8, 8\) but test_x samples are \(3, 8, 8\)'),
    ({'train_x': _npy_header((20, 64), numpy.float64) + bytes(10240)},
     'train_x must be float32, got float64'),
])
def test_dataset_headers_are_checked_before_any_entry_is_read(tmp_path, reads, replace, match):
    from datasets import npz
    path = tmp_path / 'd.npz'
    _dataset(path)
    _rewrite(path, replace)
    with pytest.raises(InputError, match=match):
        npz.load(str(path))
    assert reads == []


def test_a_forged_dataset_shape_is_refused_before_allocation(tmp_path):
    from datasets import npz
    path = tmp_path / 'd.npz'
    _dataset(path)
    _rewrite(path, {'train_x': _npy_header((10 ** 9, 1, 28, 28)) + bytes(4096),
                    'train_y': _npy_header((10 ** 9,), numpy.int32) + bytes(4096)})
    with pytest.raises(InputError, match='declares float32'):
        npz.load(str(path))


def test_checkpoint_loading_still_accepts_its_own_snapshot(tmp_path):
    snap = tmp_path / 's.npz'
    x, y = _snapshot(snap)
    at = checkpoint.load(str(snap), make_three_exit_net(), numpy.random.RandomState(0),
                         n_samples=len(x), batchsize=8, num_epoch=2, width=3)
    assert at.epoch == 1
