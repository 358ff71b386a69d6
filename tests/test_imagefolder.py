"""Image folders (``datasets.imagefolder``) and ``--dataset FOLDER|ARCHIVE``.

Every test builds its own tiny folders and archives under ``tmp_path``."""
import io
import os
import tarfile

import numpy
import pytest
from PIL import Image

from datasets import imagefolder


def pixel_code(label, index):
    """The value every pixel of image ``index`` of class ``label`` holds (PNG
    keeps it exactly), so a test can tell which file a sample came from."""
    return (label * 20 + index) % 256


def write_image(path, value, size=8, mode='RGB', fmt=None):
    channels = {'RGB': 3, 'L': 1, 'RGBA': 4}[mode]
    pixels = numpy.full((size, size, channels), value, numpy.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(path, fmt)


def write_image_folder(root, classes=('cat', 'dog', 'emu'), n_train=4, n_test=2, size=8,
                       ext='.png', value=pixel_code):
    """``root/train/<class>/NNN<ext>`` and ``root/test/...``; pixels ``value(label, i)``."""
    for split, n in (('train', n_train), ('test', n_test)):
        for label, name in enumerate(classes):
            for i in range(n):
                write_image(os.path.join(root, split, name, '{:03d}{}'.format(i, ext)),
                            value(label, i), size)
    return str(root)


def pack(folder, archive, top=''):
    """``folder``'s contents as the tar ``archive`` (compression from the name),
    under the top folder ``top`` when given, files in reverse order."""
    mode = 'w:gz' if str(archive).endswith('gz') else 'w'
    with tarfile.open(archive, mode) as tar:
        for here, _, names in sorted(os.walk(folder), reverse=True):
            for name in sorted(names, reverse=True):
                full = os.path.join(here, name)
                tar.add(full, os.path.join(top, os.path.relpath(full, folder)))
    return str(archive)


def add_member(archive, name, data=b'x', kind=tarfile.REGTYPE, linkname=''):
    """A tar ``archive`` holding one more member named exactly ``name``."""
    with tarfile.open(archive, 'a') as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, linkname, len(data) if kind == \
            tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('BRANCHYNET_DATA_DIR', str(tmp_path / 'data'))
    return tmp_path / 'data' / 'imagefolder'


def expected_order(labels_sorted):
    """Labels in the module's fixed order: sorted by class and file, then permuted."""
    order = numpy.random.RandomState(imagefolder.SEED).permutation(len(labels_sorted))
    return numpy.asarray(labels_sorted)[order]


def test_a_folder_decodes_to_float_images_labels_in_the_seeded_order(tmp_path, cache):
    root = write_image_folder(tmp_path / 'pics')
    x_train, y_train, x_test, y_test = imagefolder.get_data(root)
    assert x_train.shape == (12, 3, 8, 8) and x_test.shape == (6, 3, 8, 8)
    assert x_train.dtype == numpy.float32 and y_train.dtype == numpy.int32
    assert 0 <= x_train.min() and x_train.max() <= 1
    numpy.testing.assert_array_equal(y_train, expected_order([0] * 4 + [1] * 4 + [2] * 4))
    numpy.testing.assert_array_equal(y_test, expected_order([0] * 2 + [1] * 2 + [2] * 2))
    # each sample's pixels are those of the file its label says, in file order
    codes = numpy.round(x_train[:, 1, 3, 5] * 255).astype(int)
    sorted_codes = [pixel_code(label, i) for label in range(3) for i in range(4)]
    numpy.testing.assert_array_equal(codes, expected_order(sorted_codes))
    assert (x_train == x_train[:, :, :1, :1]).all()  # every pixel of an image is its code
    assert imagefolder.describe(root).classes == ('cat', 'dog', 'emu')


def test_every_class_is_in_the_first_thousand_samples(tmp_path, cache):
    classes = ['c{}'.format(i) for i in range(10)]
    root = write_image_folder(tmp_path / 'ten', classes, n_train=150, n_test=1)
    x_train, y_train, _, _ = imagefolder.get_data(root)
    assert len(y_train) == 1500
    assert sorted(set(y_train[:1000].tolist())) == list(range(10))
    counts = numpy.bincount(y_train[:1000], minlength=10)
    assert counts.min() > 50  # mixed, not 100 of each in class blocks by chance alone


def test_archives_and_a_top_folder_give_the_same_arrays(tmp_path, cache):
    root = write_image_folder(tmp_path / 'pics')
    expected = imagefolder.get_data(root)
    for archive, top in (('a.tar', ''), ('b.tar.gz', ''), ('c.tgz', 'pics-v1')):
        got = imagefolder.get_data(pack(root, tmp_path / archive, top))
        for a, b in zip(expected, got):
            numpy.testing.assert_array_equal(a, b)
    os.makedirs(tmp_path / 'wrapped')
    os.rename(root, tmp_path / 'wrapped' / 'inner')
    (tmp_path / 'wrapped' / 'README.txt').write_text('beside the top folder')
    for a, b in zip(expected, imagefolder.get_data(str(tmp_path / 'wrapped'))):
        numpy.testing.assert_array_equal(a, b)


def test_a_class_list_sets_the_labels_and_must_match_the_folders(tmp_path, cache):
    root = write_image_folder(tmp_path / 'pics')
    d = imagefolder.load(root, classes=['emu', 'cat', 'dog'])
    assert d.classes == ('emu', 'cat', 'dog')
    codes = numpy.round(d.x_train[:, 0, 0, 0]).astype(int)
    # a sample with label 0 (emu) holds the code of the emu folder (sorted index 2)
    assert {int(c) // 20 for c, y in zip(codes, d.y_train) if y == 0} == {2}
    with pytest.raises(ValueError, match=r'class folders of train/ \(cat, dog, emu\) differ '
                       r'from the expected classes \(cat, dog, owl\); missing: owl; '
                       r'unexpected: emu'):
        imagefolder.load(root, classes=['cat', 'dog', 'owl'])


def test_the_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path, cache,
                                                                  monkeypatch):
    root = write_image_folder(tmp_path / 'pics')
    first = imagefolder.load(root)
    assert os.path.dirname(first.cache) == str(cache) and len(first.sha256) == 64
    with numpy.load(first.cache, allow_pickle=False) as f:  # plain arrays only
        assert str(f['sha256']) == first.sha256 and list(f['classes']) == ['cat', 'dog', 'emu']
        assert int(f['seed']) == imagefolder.SEED

    def no_decoding(*args):
        raise AssertionError('decoded again')
    with monkeypatch.context() as m:
        m.setattr(imagefolder, '_decode', no_decoding)
        again = imagefolder.load(root)
    numpy.testing.assert_array_equal(again.x_train, first.x_train)
    write_image(os.path.join(root, 'train', 'dog', '000.png'), 200)  # a changed image
    changed = imagefolder.load(root)
    assert changed.sha256 != first.sha256
    assert 200 in changed.x_train[changed.y_train == 1][:, 0, 0, 0]
    with numpy.load(first.cache, allow_pickle=False) as f:
        assert str(f['sha256']) == changed.sha256


def test_a_cached_archive_is_neither_listed_nor_decoded_again(tmp_path, cache, monkeypatch):
    archive = pack(write_image_folder(tmp_path / 'pics'), tmp_path / 'pics.tar.gz')
    first = imagefolder.load(archive, classes=['dog', 'cat', 'emu'])

    def refused(*args):
        raise AssertionError('listed again')
    with monkeypatch.context() as m:
        m.setattr(imagefolder._Archive, 'listing', refused)
        again = imagefolder.load(archive, classes=['dog', 'cat', 'emu'])
        described = imagefolder.describe(archive, classes=['dog', 'cat', 'emu'])
    numpy.testing.assert_array_equal(again.x_test, first.x_test)
    assert described == imagefolder.describe(archive, classes=['dog', 'cat', 'emu'],
                                             cache_dir=str(tmp_path / 'elsewhere'))
    assert described.counts == {'train': 12, 'test': 6} and described.formats == ('PNG',)
    # another class order is another labelling: decoded again, with the sorted names
    assert imagefolder.load(archive).classes == ('cat', 'dog', 'emu')


def test_a_damaged_cache_is_rebuilt(tmp_path, cache):
    root = write_image_folder(tmp_path / 'pics')
    first = imagefolder.load(root)
    with open(first.cache, 'r+b') as f:
        f.truncate(100)
    numpy.testing.assert_array_equal(imagefolder.load(root).x_train, first.x_train)


def test_grayscale_and_colour_images(tmp_path, cache):
    root = write_image_folder(tmp_path / 'pics')
    write_image(os.path.join(root, 'train', 'cat', 'gray.png'), 7, mode='L')
    write_image(os.path.join(root, 'test', 'cat', 'alpha.png'), 9, mode='RGBA')
    d = imagefolder.load(root)
    assert d.x_train.shape[1] == 3  # the grayscale image repeated over 3 channels
    assert any((x == 7).all() for x in d.x_train) and any((x == 9).all() for x in d.x_test)
    gray = tmp_path / 'gray'
    for split in ('train', 'test'):
        write_image(str(gray / split / 'a' / '1.png'), 3, mode='L')
    assert imagefolder.load(str(gray)).x_train.shape == (1, 1, 8, 8)


@pytest.mark.parametrize('change, match', [
    (lambda r: os.makedirs(os.path.join(r, 'train', 'owl')),
     r'class folder train/owl holds no images'),
    (lambda r: open(os.path.join(r, 'train', 'dog', '002.png'), 'wb').write(b'\x89PNG junk'),
     r'train/dog/002.png is not a readable image'),
    (lambda r: open(os.path.join(r, 'test', 'cat', '001.png'), 'r+b').truncate(45),
     r'test/cat/001.png is not a readable image'),
    (lambda r: write_image(os.path.join(r, 'train', 'emu', '003.png'), 1, size=16),
     r'the images differ in size: \S+/\d+.png is 8x8, train/emu/003.png is 16x16'),
    (lambda r: __import__('shutil').rmtree(os.path.join(r, 'test')),
     r'has no test split: expected test/<class>/<image> beside train/'),
    (lambda r: open(os.path.join(r, 'train', 'cat', 'notes.txt'), 'w').write('x'),
     r'train/cat/notes.txt is not a .jpg, .jpeg or .png image'),
    (lambda r: write_image(os.path.join(r, 'train', 'cat', 'deeper', '1.png'), 1),
     r'train/cat/deeper/1.png is not at train/<class>/<image>'),
    (lambda r: write_image(os.path.join(r, 'test', 'owl', '1.png'), 1),
     r'class folders of test/ \(cat, dog, emu, owl\) differ .*; unexpected: owl'),
    (lambda r: write_image(os.path.join(r, 'train', 'cat', 'x.png'), 1, fmt='GIF'),
     r'train/cat/x.png is a GIF image; JPEG or PNG expected'),
])
def test_bad_folders_are_one_line_errors_naming_the_problem(tmp_path, cache, change, match):
    root = write_image_folder(tmp_path / 'pics')
    change(root)
    with pytest.raises(ValueError, match=match) as error:
        imagefolder.get_data(root)
    assert '\n' not in str(error.value)
    assert not os.path.exists(cache) or not os.listdir(cache)  # no cache written


def test_bad_archives_are_refused_without_extracting_anything(tmp_path, cache, monkeypatch):
    root = write_image_folder(tmp_path / 'pics')
    monkeypatch.chdir(tmp_path)
    for name, kind, linkname, match in (
            ('/tmp/evil.png', tarfile.REGTYPE, '', r"member '/tmp/evil.png' has an absolute "
                                                   r"path; refused"),
            ('train/../../evil.png', tarfile.REGTYPE, '', r"member 'train/../../evil.png' has "
                                                          r"'..' in its path; refused"),
            ('train/cat/link.png', tarfile.SYMTYPE, '/etc/passwd',
             r'member train/cat/link.png is a link; only plain files and folders are read')):
        archive = pack(root, tmp_path / 'bad.tar')
        add_member(archive, name, kind=kind, linkname=linkname)
        with pytest.raises(ValueError, match=match):
            imagefolder.get_data(archive)
        os.unlink(archive)
    assert sorted(os.listdir(tmp_path)) == ['pics']  # nothing extracted, no cache written


def test_an_archive_of_something_else_is_refused(tmp_path, cache):
    other = tmp_path / 'other'
    (other / 'cifar-10-batches-py').mkdir(parents=True)
    (other / 'cifar-10-batches-py' / 'data_batch_1').write_bytes(b'123')
    archive = pack(str(other), tmp_path / 'other.tar.gz')
    assert not imagefolder.is_image_folder(archive)
    with pytest.raises(ValueError, match=r'other.tar.gz is not in the image-folder layout: no '
                       r'train/ or test/ folder .*first member: '
                       r'cifar-10-batches-py/data_batch_1'):
        imagefolder.get_data(archive)
    (tmp_path / 'plain.tar.gz').write_bytes(b'not a tar at all')
    with pytest.raises(ValueError, match=r'plain.tar.gz is not a readable tar archive'):
        imagefolder.get_data(str(tmp_path / 'plain.tar.gz'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        imagefolder.get_data(str(tmp_path / 'missing.tar'))


def test_is_image_folder(tmp_path):
    root = write_image_folder(tmp_path / 'pics', n_train=1, n_test=1)
    assert imagefolder.is_image_folder(root)
    assert imagefolder.is_image_folder(pack(root, tmp_path / 'p.tar.gz', 'top'))
    assert imagefolder.is_image_folder(str(tmp_path))  # one top folder: pics
    (tmp_path / 'more').mkdir()
    assert not imagefolder.is_image_folder(str(tmp_path))  # two folders, no split
    (tmp_path / 'f.npz').write_bytes(b'PK')
    assert not imagefolder.is_image_folder(str(tmp_path / 'f.npz'))


def test_the_driver_takes_a_folder_or_an_archive_as_dataset(tmp_path, cache):
    from branchynet.driver import run
    root = write_image_folder(tmp_path / 'pics', n_train=5, n_test=3)
    archive = pack(root, tmp_path / 'pics.tar.gz')
    for source in (root, archive):
        config = {'dataset_path': source, 'dataset': 'mnist', 'num_classes': 10,
                  'n_train': 7, 'n_test': None}
        x_train, y_train, x_test, y_test = run.load_dataset(config)
        assert x_train.shape == (7, 3, 8, 8) and x_test.shape == (9, 3, 8, 8)
        assert x_train.dtype == numpy.float32 and y_test.dtype == numpy.int32
        assert run.data_copy(config) is None
    with pytest.raises(ValueError, match=r'pics has 3 classes; this network has 2 outputs'):
        run.load_dataset(dict(config, dataset_path=root, num_classes=2))
    with pytest.raises(ValueError, match=r"unknown dataset 'nothing'; expected a .npz file, "
                       r'an image folder'):
        run.load_dataset(dict(config, dataset_path='nothing'))
