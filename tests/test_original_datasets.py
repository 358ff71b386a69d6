"""The original's dataset functions: cifar10 (ZCA, min-max), cifar10gcn,
cifar100gcn, get_data_dev, datasets.utils, pcifar10.get_data(redir)."""
import io
import pickle
import tarfile

import numpy
import pytest

from datasets import cifar10, cifar100gcn, cifar10gcn, pcifar10
from datasets import utils as dutils
from tests.helpers import write_official_tarball


@pytest.fixture
def cifar_tarball(tmp_path, monkeypatch):
    tarball = tmp_path / cifar10.TARBALL
    truth = write_official_tarball(tarball, n_per_batch=8)
    monkeypatch.setenv('BRANCHYNET_CIFAR10', str(tarball))
    return truth


def test_zca_whitening_gives_identity_covariance():
    rng = numpy.random.RandomState(0)
    data = rng.randn(500, 4).dot(rng.randn(4, 4)) + 3.
    components, mean, white = cifar10.preprocessing(data)
    numpy.testing.assert_allclose(mean, data.mean(axis=0))
    numpy.testing.assert_allclose(white.T.dot(white) / len(white), numpy.eye(4), atol=1e-8)
    numpy.testing.assert_allclose(components, components.T, atol=1e-10)  # ZCA: symmetric


def test_cifar10_get_data_scales_every_image_to_0_1(cifar_tarball, monkeypatch):
    x_train, y_train, x_test, y_test = cifar10.get_data(whitening=0)
    assert x_train.shape == (40, 3, 32, 32) and x_train.dtype == numpy.float32
    flat = x_train.reshape(40, -1)
    numpy.testing.assert_allclose(flat.min(axis=1), 0.)
    numpy.testing.assert_allclose(flat.max(axis=1), 1.)
    raw = cifar_tarball['data_batch_1'][0][0].astype(float)
    numpy.testing.assert_allclose(flat[0], (raw - raw.min()) / (raw - raw.min()).max(),
                                  rtol=1e-6)
    assert y_test.tolist() == cifar_tarball['test_batch'][1]
    # whitening=1 fits ZCA on the training pixels (0..255) and applies it to both sets
    seen = []

    def fake_zca(data):
        seen.append(data.copy())
        return numpy.eye(data.shape[1]), numpy.zeros(data.shape[1]), data.copy()
    monkeypatch.setattr(cifar10, 'preprocessing', fake_zca)
    white = cifar10.get_data(whitening=1)
    assert len(seen) == 1 and seen[0].shape == (40, 3072) and seen[0].max() > 1.
    numpy.testing.assert_allclose(white[0], x_train, rtol=1e-6)
    with pytest.raises(ValueError, match='whitening'):
        cifar10.get_data(whitening=2)


def test_cifar10gcn_is_the_pcifar10_recipe(cifar_tarball):
    x_train, y_train, x_test, y_test = cifar10gcn.get_data()
    raw = cifar10.get_raw_data()
    expected = pcifar10.preprocess(raw[0], raw[2])
    numpy.testing.assert_allclose(x_train, expected[0], rtol=1e-4, atol=1e-5)
    numpy.testing.assert_allclose(x_test, expected[1], rtol=1e-4, atol=1e-5)
    no_gcn = cifar10gcn.get_data(gcn=0)[0]
    numpy.testing.assert_allclose(no_gcn, raw[0] - raw[0].mean(axis=0), atol=1e-6)


def test_global_contrast_normalize_options():
    x = numpy.array([[1., 2., 3., 6.], [0., 0., 0., 0.]])
    by_std = cifar10gcn.global_contrast_normalize(x, use_std=True)
    numpy.testing.assert_allclose(by_std[0].std(ddof=1), 1.)
    numpy.testing.assert_allclose(by_std[1], 0.)  # zero divisor left at 1
    by_norm = cifar10gcn.global_contrast_normalize(x, scale=2.)
    numpy.testing.assert_allclose(numpy.linalg.norm(by_norm[0]), 2.)
    with pytest.raises(ValueError, match='2-dimensional'):
        cifar10gcn.global_contrast_normalize(x.ravel())


def _no_zca(data):  # ZCA of 3072 dimensions is slow and singular on 40 images
    return numpy.eye(data.shape[1]), numpy.zeros(data.shape[1]), data.copy()


def test_get_data_dev_keeps_the_first_classes(cifar_tarball, monkeypatch):
    monkeypatch.setattr(cifar10, 'preprocessing', _no_zca)
    x_train, y_train, x_test, y_test = cifar10.get_data_dev(numclasses=3)
    assert set(y_train.tolist()) <= {0, 1, 2} and set(y_test.tolist()) <= {0, 1, 2}
    full = cifar10.get_data()
    assert len(y_train) == int((full[1] < 3).sum()) and len(x_test) == len(y_test)


def test_cifar100gcn_reads_the_official_layout(tmp_path, monkeypatch):
    rng = numpy.random.RandomState(0)
    tarball = tmp_path / cifar100gcn.TARBALL
    labels = {}
    with tarfile.open(tarball, 'w:gz') as tar:
        for name, n in (('train', 12), ('test', 5)):
            data = rng.randint(0, 256, size=(n, 3072)).astype(numpy.uint8)
            labels[name] = [int(v) for v in rng.randint(0, 100, n)]
            raw = pickle.dumps({b'data': data, b'fine_labels': labels[name],
                                b'coarse_labels': [0] * n}, protocol=2)
            info = tarfile.TarInfo('cifar-100-python/' + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    monkeypatch.setenv('BRANCHYNET_CIFAR100', str(tarball))
    x_train, y_train, x_test, y_test = cifar100gcn.get_data()
    assert x_train.shape == (12, 3, 32, 32) and y_test.tolist() == labels['test']
    numpy.testing.assert_allclose(x_train.reshape(12, -1).std(axis=1, ddof=1), 1., rtol=1e-4)
    monkeypatch.setenv('BRANCHYNET_CIFAR100', str(tmp_path / 'missing'))
    with pytest.raises(Exception, match='CIFAR-100'):
        cifar100gcn.get_data()


def test_mean_helpers_and_pcifar10_redir(tmp_path):
    x = numpy.arange(6.).reshape(3, 2)
    numpy.testing.assert_allclose(dutils.subtract_mean(x, dutils.compute_mean(x)),
                                  x - [2., 3.])
    from datasets import npz
    (tmp_path / 'datasets' / 'data' / 'pcifar10').mkdir(parents=True)
    rng = numpy.random.RandomState(0)
    arrays = (rng.randn(4, 3, 32, 32).astype(numpy.float32), numpy.arange(4, dtype=numpy.int32),
              rng.randn(2, 3, 32, 32).astype(numpy.float32), numpy.arange(2, dtype=numpy.int32))
    npz.save(str(tmp_path / 'datasets/data/pcifar10/data.npz'), *arrays)
    got = pcifar10.get_data(redir=str(tmp_path) + '/')
    for a, b in zip(got, arrays):
        numpy.testing.assert_array_equal(a, b)
