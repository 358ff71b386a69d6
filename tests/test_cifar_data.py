"""CIFAR-10 reader, pcifar10 recipe, generic npz datasets, augmentation."""
import os
import pickle
import tarfile

import numpy
import pytest

from datasets import DataUnavailableError, cifar10, npz, pcifar10
from datasets._fetch import ChecksumError, download
from tests.helpers import write_official_tarball


def test_reads_a_tarball_in_the_official_format(tmp_path):
    tarball = tmp_path / cifar10.TARBALL
    truth = write_official_tarball(tarball)
    x_train, y_train, x_test, y_test = cifar10.get_raw_data(str(tarball))
    assert x_train.shape == (30, 3, 32, 32) and x_test.shape == (6, 3, 32, 32)
    assert x_train.dtype == numpy.float32 and y_train.dtype == numpy.int32
    assert y_train.tolist() == sum((truth[n][1] for n in cifar10.TRAIN_BATCHES), [])
    # channel-major layout: the first 1024 bytes are the red plane
    numpy.testing.assert_allclose(x_test[0, 0].ravel(),
                                  truth['test_batch'][0][0, :1024] / 255.)
    numpy.testing.assert_allclose(x_test[2, 2, 31, 31], truth['test_batch'][0][2, 3071] / 255.)


def test_reads_the_extracted_folder_and_the_environment_variable(tmp_path, monkeypatch):
    tarball = tmp_path / cifar10.TARBALL
    write_official_tarball(tarball)
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / 'x')
    from_tar = cifar10.get_raw_data(str(tarball))
    monkeypatch.setenv('BRANCHYNET_CIFAR10', str(tmp_path / 'x' / cifar10.FOLDER))
    from_folder = cifar10.get_raw_data()
    for a, b in zip(from_tar, from_folder):
        numpy.testing.assert_array_equal(a, b)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_foreign_pickle_is_refused_without_running_it(tmp_path):
    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    marker = tmp_path / 'code-ran'
    for name in cifar10.TRAIN_BATCHES + cifar10.TEST_BATCHES:
        (folder / name).write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(ValueError, match='not a CIFAR-10 python batch'):
        cifar10.get_raw_data(str(folder))
    assert not marker.exists()


def test_wrong_md5_is_refused_and_leaves_no_partial_file(tmp_path):
    src = tmp_path / 'served.tar.gz'
    write_official_tarball(src)
    dest = tmp_path / 'cache' / cifar10.TARBALL
    with pytest.raises(ChecksumError, match='expected c58f30108f718f92721af3b95e74349a'):
        download(src.as_uri(), str(dest), digest=cifar10.MD5, progress=False)
    assert not dest.exists()
    assert os.listdir(tmp_path / 'cache') == []


def test_unreachable_download_says_how_to_provide_the_data(tmp_path, monkeypatch):
    monkeypatch.delenv('BRANCHYNET_CIFAR10', raising=False)
    monkeypatch.setattr(cifar10, 'URL', 'http://cifar.invalid/cifar-10-python.tar.gz')
    with pytest.raises(DataUnavailableError, match='put it in {}'.format(tmp_path)):
        cifar10.locate(cache=str(tmp_path))


def test_pcifar10_recipe_matches_a_hand_computation():
    x_train = numpy.array([[[[0.0, 0.2]], [[0.4, 0.6]]],
                           [[[1.0, 0.8]], [[0.4, 0.2]]]], dtype=numpy.float32)  # (2,2,1,2)
    x_test = numpy.array([[[[0.5, 0.5]], [[0.5, 0.5]]]], dtype=numpy.float32)
    # per-pixel mean of train: [[0.5, 0.5]], [[0.4, 0.4]]
    # train[0] - mean = [-0.5, -0.3, 0.0, 0.2]: mean -0.15, centred
    #   [-0.35, -0.15, 0.15, 0.35], std (ddof 1) = sqrt(0.2725/3)
    c = numpy.array([-0.35, -0.15, 0.15, 0.35])
    expected0 = c / numpy.sqrt((c ** 2).sum() / 3)
    # test[0] - mean = [0, 0, 0.1, 0.1]: centred [-0.05, -0.05, 0.05, 0.05]
    d = numpy.array([-0.05, -0.05, 0.05, 0.05])
    expected_test = d / numpy.sqrt((d ** 2).sum() / 3)
    p_train, p_test = pcifar10.preprocess(x_train, x_test)
    assert p_train.dtype == numpy.float32 and p_train.shape == x_train.shape
    numpy.testing.assert_allclose(p_train[0].ravel(), expected0, rtol=1e-5)
    numpy.testing.assert_allclose(p_test[0].ravel(), expected_test, rtol=1e-5)


def test_constant_images_keep_a_unit_divisor():
    x = numpy.full((2, 3, 4, 4), 0.3, dtype=numpy.float32)
    out = pcifar10.global_contrast_normalize(x)
    assert numpy.isfinite(out).all() and numpy.abs(out).max() < 1e-6


def test_pcifar10_is_built_from_cifar10_when_missing(tmp_path, monkeypatch):
    tarball = tmp_path / cifar10.TARBALL
    write_official_tarball(tarball)
    monkeypatch.setenv('BRANCHYNET_CIFAR10', str(tarball))
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    x_train, y_train, x_test, y_test = pcifar10.get_data()
    assert (tmp_path / 'data' / 'pcifar10' / 'data.npz').exists()
    raw = cifar10.get_raw_data(str(tarball))
    expected = pcifar10.preprocess(raw[0], raw[2])
    numpy.testing.assert_allclose(x_train, expected[0], rtol=1e-6)
    numpy.testing.assert_array_equal(y_test, raw[3])
    again = pcifar10.get_data()  # now read from the npz, same arrays
    numpy.testing.assert_array_equal(again[0], x_train)


def _good_arrays(channels=1, size=8, n=5):
    rng = numpy.random.RandomState(0)
    return {'train_x': rng.rand(n, channels, size, size).astype(numpy.float32),
            'train_y': rng.randint(0, 10, n).astype(numpy.int32),
            'test_x': rng.rand(3, channels, size, size).astype(numpy.float32),
            'test_y': rng.randint(0, 10, 3).astype(numpy.int32)}


def test_npz_loader_accepts_any_channels_and_size(tmp_path):
    arrays = _good_arrays(channels=4, size=12)
    npz.save(tmp_path / 'd.npz', *(arrays[k] for k in npz.KEYS))
    x_train, y_train, x_test, y_test = npz.load(tmp_path / 'd.npz', num_classes=10)
    assert x_train.shape == (5, 4, 12, 12) and y_test.dtype == numpy.int32


@pytest.mark.parametrize('change, error, match', [
    (lambda a: a.pop('test_y'), ValueError, 'lacks key.*test_y'),
    (lambda a: a.update(train_x=a['train_x'].astype(numpy.float64)), TypeError,
     'train_x must be float32, got float64'),
    (lambda a: a.update(test_y=numpy.array([0, 3, 12], numpy.int32)), ValueError,
     'test_y labels must be 0..9, got values from 0 to 12'),
    (lambda a: a.update(train_y=a['train_y'][:4]), ValueError,
     '5 samples in train_x but train_y has shape'),
    (lambda a: a.update(test_y=a['test_y'].astype(numpy.float32)), TypeError,
     'test_y must hold integer labels'),
    (lambda a: a.update(test_x=a['test_x'][:, :, :4]), ValueError,
     'train_x samples are .* but test_x samples are'),
])
def test_npz_loader_rejects_bad_files_with_clear_messages(tmp_path, change, error, match):
    arrays = _good_arrays()
    change(arrays)
    numpy.savez(tmp_path / 'bad.npz', **arrays)
    with pytest.raises(error, match=match):
        npz.load(tmp_path / 'bad.npz', num_classes=10)


@pytest.mark.parametrize('labels, match', [
    ([0, 1, 2 ** 32 + 3], r'test_y labels must be 0..2147483647 \(int32\), got values from 0 '
                          r'to 4294967299'),
    ([0, -1, 2], r'test_y labels must be 0..2147483647 \(int32\), got values from -1 to 2'),
])
def test_npz_labels_that_do_not_fit_int32_are_refused_without_a_class_count(tmp_path, labels,
                                                                           match):
    """With no class count (``--network FILE.py:F --dataset FILE.npz``), the
    int64 label 2 ** 32 + 3 must not load as 3."""
    arrays = _good_arrays()
    arrays['test_y'] = numpy.array(labels, numpy.int64)
    numpy.savez(tmp_path / 'bad.npz', **arrays)
    with pytest.raises(ValueError, match=match):
        npz.load(tmp_path / 'bad.npz')


def test_augmentation_variants_and_normalisation():
    from branchynet import augment
    rng = numpy.random.RandomState(0)
    x = rng.rand(6, 3, 32, 32).astype(numpy.float32)
    numpy.testing.assert_array_equal(augment.variant(x[0], 0, True), x[0][:, :, ::-1])
    crop = augment.variant(x[0], 9, False)  # offset (8, 8), scaled 24 -> 32
    assert crop.shape == (3, 32, 32)
    numpy.testing.assert_allclose(crop[:, 0, 0], x[0][:, 8, 8], atol=0.05)
    out = augment.augment_batch(x, seed=1)
    assert out.shape == x.shape and out.dtype == numpy.float32
    flat = out.reshape(6, -1)
    numpy.testing.assert_allclose(flat.mean(1), 0, atol=1e-5)
    numpy.testing.assert_allclose(flat.std(1, ddof=1), 1, rtol=1e-4)
    y = numpy.arange(6, dtype=numpy.int32)
    batches = list(augment.AugmentedBatches(x, y, 4, seed=0, workers=1).epoch())
    assert [len(b[1]) for b in batches] == [4, 2]
    assert sorted(numpy.concatenate([b[1] for b in batches]).tolist()) == y.tolist()


def _cifar_copy(tmp_path, ext='.jpg', classes=cifar10.CLASSES, size=32, n_train=3, n_test=2):
    """A tiny image-folder copy of CIFAR-10: class ``k``'s images are solid grey
    ``25 k + i`` (``i`` the file), which survives JPEG to within a few levels."""
    from tests.test_imagefolder import pack, write_image_folder
    root = write_image_folder(tmp_path / 'copy', classes, n_train, n_test, size, ext,
                              value=lambda label, i: 25 * label + i)
    return pack(root, tmp_path / 'cifar10-jpeg.tar.gz')


def test_an_image_folder_copy_is_read_in_cifar_class_order(tmp_path, monkeypatch):
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    archive = _cifar_copy(tmp_path)
    x_train, y_train, x_test, y_test = cifar10.get_raw_data(archive)
    assert x_train.shape == (30, 3, 32, 32) and x_test.shape == (20, 3, 32, 32)
    assert x_train.dtype == numpy.float32 and y_train.dtype == numpy.int32
    # airplane = 0 ... truck = 9, whatever the folder order: grey level 25 k + i
    grey = x_train.mean(axis=(1, 2, 3)) * 255
    assert numpy.abs(grey - 25 * y_train - numpy.round(grey - 25 * y_train)).max() < 3
    assert (numpy.abs(grey - 25 * y_train) < 6).all()
    assert sorted(numpy.bincount(y_test).tolist()) == [2] * 10
    source = cifar10.data_source(archive)
    assert source['label'] == 'CIFAR-10 (JPEG copy)' and not source['official']
    assert len(source['sha256']) == 64
    monkeypatch.setenv('BRANCHYNET_CIFAR10', archive)  # the setting takes the copy too
    assert cifar10.source_label() == 'CIFAR-10 (JPEG copy)'
    numpy.testing.assert_array_equal(cifar10.get_raw_data()[1], y_train)


def test_data_source_of_the_official_tarball_and_of_a_png_copy(tmp_path, monkeypatch):
    monkeypatch.delenv('BRANCHYNET_CIFAR10', raising=False)
    tarball = tmp_path / cifar10.TARBALL
    write_official_tarball(tarball)
    assert cifar10.data_source(str(tarball)) == {'label': 'CIFAR-10', 'official': True,
                                                 'path': str(tarball), 'sha256': None}
    assert cifar10.source_label() == 'CIFAR-10'  # nothing named: the official files
    png = _cifar_copy(tmp_path, ext='.png')
    assert cifar10.source_label(png) == 'CIFAR-10 (image-folder copy)'


def test_a_copy_with_other_class_names_or_sizes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    names = list(cifar10.CLASSES[:9]) + ['lorry']
    (tmp_path / 'a').mkdir()
    with pytest.raises(ValueError, match=r'differ from the expected classes \(airplane, '
                       r'automobile, .*truck\); missing: truck; unexpected: lorry'):
        cifar10.get_raw_data(_cifar_copy(tmp_path / 'a', classes=names))
    (tmp_path / 'b').mkdir()
    with pytest.raises(ValueError, match=r"CIFAR-10 images are 3x32x32 \(colour\), this "
                       r"copy's are 3x8x8"):
        cifar10.get_raw_data(_cifar_copy(tmp_path / 'b', size=8))


def test_pcifar10_from_a_copy_records_it_and_is_never_taken_for_another(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    (tmp_path / 'one').mkdir()
    archive = _cifar_copy(tmp_path / 'one')
    monkeypatch.setenv('BRANCHYNET_CIFAR10', archive)
    x_train, y_train, x_test, y_test = pcifar10.get_data()
    source = cifar10.data_source()
    built = pcifar10.path(source)
    assert os.path.basename(built) == 'data-{}.npz'.format(source['sha256'][:16])
    assert pcifar10.recorded_source(built) == ('CIFAR-10 (JPEG copy)', source['sha256'])
    expected = pcifar10.preprocess(*cifar10.get_raw_data()[::2])
    numpy.testing.assert_allclose(x_train, expected[0], rtol=1e-6)
    assert not os.path.exists(pcifar10.path())  # the official data.npz is left alone
    # another copy (other bytes) gets its own file, built from it
    (tmp_path / 'two').mkdir()
    other = _cifar_copy(tmp_path / 'two', n_train=4)
    monkeypatch.setenv('BRANCHYNET_CIFAR10', other)
    assert len(pcifar10.get_data()[0]) == 40
    # a file whose record names another source is rebuilt, not reused
    monkeypatch.setenv('BRANCHYNET_CIFAR10', archive)
    os.replace(pcifar10.path(cifar10.data_source(other)), built)
    assert len(pcifar10.get_data()[0]) == 30
    assert pcifar10.recorded_source(built)[1] == source['sha256']


def test_pcifar10_of_the_official_files_is_not_taken_from_a_copy(tmp_path, monkeypatch):
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    tarball = tmp_path / cifar10.TARBALL
    write_official_tarball(tarball)
    official = pcifar10.path()
    x = numpy.zeros((5, 3, 32, 32), numpy.float32)
    y = numpy.zeros(5, numpy.int32)
    npz.save(official, x, y, x, y)  # a data.npz without a record: the original's
    monkeypatch.setenv('BRANCHYNET_CIFAR10', str(tarball))
    assert len(pcifar10.get_data()[0]) == 5  # reused as the official files' data
    numpy.savez(official, source=numpy.array('CIFAR-10 (JPEG copy)'),
                source_sha256=numpy.array('ab' * 32), train_x=x, train_y=y, test_x=x,
                test_y=y)
    assert len(pcifar10.get_data()[0]) == 30  # recorded another source: rebuilt
    assert pcifar10.recorded_source(official) == ('CIFAR-10', '')


SMALL_NET = """
import chainer.functions as F
import chainer.links as L
from branchynet import FL, Branch, BranchyNet


def small():
    return BranchyNet([
        L.Convolution2D(3, 4, 3, pad=1), FL(F.relu), FL(F.max_pooling_2d, 4, 4),
        Branch([L.Linear(4 * 8 * 8, 10)]),
        L.Linear(4 * 8 * 8, 16), FL(F.relu), Branch([L.Linear(16, 10)]),
    ], input_shape=(3, 32, 32))
"""


def test_the_driver_labels_results_on_a_copy(tmp_path, monkeypatch):
    """A small network on pcifar10 built from a JPEG copy named by --cifar10:
    tables, results and reports say "CIFAR-10 (JPEG copy)"."""
    import json
    from branchynet.driver import cli
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    monkeypatch.delenv('BRANCHYNET_CIFAR10', raising=False)
    archive = _cifar_copy(tmp_path, n_train=5, n_test=2)
    (tmp_path / 'mynet.py').write_text(SMALL_NET)
    out = tmp_path / 'out'
    status = cli.main(['--network', str(tmp_path / 'mynet.py') + ':small', '--dataset',
                       'pcifar10', '--cifar10', archive, '--n-val', '10', '--epochs-main', '1',
                       '--epochs-joint', '1', '--timing-repeats', '2', '--out', str(out),
                       '--time-devices', 'cpu', '--quiet'])
    assert status == 0
    assert os.environ['BRANCHYNET_CIFAR10'] == archive
    results = json.loads((out / '_results' / 'small_results.json').read_text())
    assert results['data']['source'] == 'CIFAR-10 (JPEG copy)'
    assert results['data']['source_sha256'] == cifar10.data_source(archive)['sha256']
    assert results['title'] == 'small on CIFAR-10 (JPEG copy)'
    table = (out / '_results' / 'small_cpu_table.md').read_text()
    assert '| CPU | small on CIFAR-10 (JPEG copy) |' in table
    assert '| CPU | B-small on CIFAR-10 (JPEG copy) (calibrated) |' in table
    assert 'B-small on CIFAR-10 (JPEG copy)' in (out / '_results' /
                                                  'small_cpu_calibration.md').read_text()


def test_the_cifar10_option_must_name_something(tmp_path, capsys):
    from branchynet.driver import cli
    assert cli.main(['--network', 'alex_cifar10', '--cifar10', str(tmp_path / 'none'),
                     '--out', str(tmp_path)]) == 2
    assert 'error: --cifar10 {}: no such file or folder'.format(tmp_path / 'none') in \
        capsys.readouterr().err
