"""Damaged, foreign or out-of-range data files get a message naming the file;
damaged cached downloads are replaced rather than tripped over every run."""
import gzip
import io
import os
import pickle
import tarfile

import numpy
import pytest

from branchynet.driver import cli
from branchynet.validation import InputError
from datasets import cifar10, mnist, npz
from tests.helpers import write_official_tarball


def _tarball_with(path, batch):
    """A CIFAR tarball whose every batch is the pickle of ``batch``."""
    raw = pickle.dumps(batch, protocol=2)
    with tarfile.open(path, 'w:gz') as tar:
        for name in cifar10.TRAIN_BATCHES + cifar10.TEST_BATCHES:
            info = tarfile.TarInfo('cifar-10-batches-py/' + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return str(path)


PIXELS = numpy.zeros((2, 3072), numpy.uint8)


@pytest.mark.parametrize('batch, match', [
    ({b'data': PIXELS, b'labels': [99, 1]}, r'labels must be integers 0\.\.9.*from 1 to 99'),
    ({b'data': PIXELS, b'labels': [-7, 1]}, r'labels must be integers 0\.\.9.*from -7 to 1'),
    ({b'data': PIXELS, b'labels': [0.5, 1.0]},
     r'labels must be integers 0\.\.9, got dtype float64'),
    ({b'data': PIXELS.astype(numpy.float64) + 300.5, b'labels': [0, 1]},
     r'data must be uint8 pixels \(0\.\.255\), got dtype float64 with values from 300.5'),
    ({b'data': PIXELS.astype(numpy.int64) - 7, b'labels': [0, 1]},
     r'data must be uint8 pixels.*from -7 to -7'),
    ([PIXELS, [0, 1]], 'holds a list, expected a dict'),
])
def test_cifar_batches_are_checked_before_any_cast(tmp_path, batch, match):
    path = _tarball_with(tmp_path / cifar10.TARBALL, batch)
    with pytest.raises(InputError, match=match):
        cifar10.get_raw_data(path)


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty'])
def test_truncated_or_garbage_cifar_tarballs_name_the_file(tmp_path, damage):
    path = tmp_path / cifar10.TARBALL
    write_official_tarball(path, n_per_batch=50)
    data = path.read_bytes()
    path.write_bytes({'truncated': data[:len(data) // 2], 'garbage': os.urandom(4000),
                      'empty': b''}[damage])
    with pytest.raises(InputError, match='cifar-10-python.tar.gz is not a readable CIFAR-10 '
                                         'tarball'):
        cifar10.get_raw_data(str(path))


def test_a_damaged_cached_cifar_tarball_is_replaced(tmp_path, monkeypatch, capsys):
    cache = tmp_path / 'cache'
    cache.mkdir()
    (cache / cifar10.TARBALL).write_bytes(b'half a download')
    fetched = []

    def fake_download(url, dest, digest=None, **kwargs):
        fetched.append(dest)
        write_official_tarball(dest)
        return dest
    monkeypatch.delenv('BRANCHYNET_CIFAR10', raising=False)
    monkeypatch.setattr(cifar10, 'download', fake_download)
    assert cifar10.locate(cache=str(cache)) == str(cache / cifar10.TARBALL)
    assert fetched == [str(cache / cifar10.TARBALL)]
    assert 'fails its md5 check' in capsys.readouterr().err


def test_a_corrupt_cached_mnist_gz_is_replaced(tmp_path, monkeypatch, mnist_data):
    src = mnist.fetch()
    for name in mnist.FILES:  # the small labels file as .gz, the others raw
        with open(os.path.join(src, name), 'rb') as f:
            if name == 't10k-labels-idx1-ubyte':
                with gzip.open(os.path.join(tmp_path, name + '.gz'), 'wb') as out:
                    out.write(f.read())
            else:
                open(os.path.join(tmp_path, name), 'wb').write(f.read())
    gz = tmp_path / 't10k-labels-idx1-ubyte.gz'
    data = bytearray(gz.read_bytes())
    data[30:40] = b'\x00' * 10  # a corrupt deflate stream: zlib.error on reading
    gz.write_bytes(bytes(data))
    served = []

    def from_cache_copy(folder, names):
        served.extend(names)
        for name in names:
            with open(os.path.join(src, name), 'rb') as f:
                open(os.path.join(folder, name), 'wb').write(f.read())
    monkeypatch.setattr(mnist, '_sources', lambda: [('test source', from_cache_copy)])
    x_train, y_train, x_test, y_test = mnist.get_data(str(tmp_path))
    assert served == ['t10k-labels-idx1-ubyte'] and not gz.exists()
    numpy.testing.assert_array_equal(y_test, mnist_data[3])


def test_a_truncated_dataset_npz_names_the_file(tmp_path, capsys):
    rng = numpy.random.RandomState(0)
    path = tmp_path / 'mine.npz'
    npz.save(str(path), rng.rand(40, 1, 28, 28).astype(numpy.float32),
             rng.randint(0, 10, 40).astype(numpy.int32),
             rng.rand(10, 1, 28, 28).astype(numpy.float32),
             rng.randint(0, 10, 10).astype(numpy.int32))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 3 // 4])
    with pytest.raises(InputError, match='mine.npz'):
        npz.load(str(path))
    assert cli.main(['--network', 'lenet_mnist', '--preset', 'tiny', '--dataset',
                            str(path), '--out', str(tmp_path / 'o'),
                            '--time-devices', 'cpu']) == 2
    assert 'mine.npz' in capsys.readouterr().err
