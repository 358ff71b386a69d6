"""CIFAR-10: (N,3,32,32) float32 in [0,1], int32 labels.

Where the data comes from, in this order:

1. ``path`` (argument) or ``$BRANCHYNET_CIFAR10`` (the driver's
   ``--cifar10 PATH`` sets it): the official tarball
   ``cifar-10-python.tar.gz``, its extracted ``cifar-10-batches-py`` folder,
   or an image-folder copy (a folder or ``.tar``/``.tar.gz`` holding
   ``train/<class>/*.jpg|png`` and ``test/<class>/*``, read by
   ``datasets.imagefolder`` with the class folders named as ``CLASSES``);
2. the cache folder ``datasets/data/cifar10`` (the official tarball or folder);
3. the official tarball from the University of Toronto, md5-checked and
   written atomically into the cache folder.

The batches are Python pickles; they are read with an unpickler that only
admits the plain types the official files contain (no code runs).
``data_source()`` says which source a run reads: results measured on an
image-folder copy are labelled ``CIFAR-10 (JPEG copy)`` (or ``CIFAR-10
(image-folder copy)`` for PNG files), never plain ``CIFAR-10``.
"""
import io
import os
import pickle
import sys
import tarfile
import zlib

import numpy
import scipy.linalg

from . import DataUnavailableError, data_dir, imagefolder
from ._fetch import download, file_digest
from branchynet.validation import InvalidValue

URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
TARBALL = 'cifar-10-python.tar.gz'
FOLDER = 'cifar-10-batches-py'
MD5 = 'c58f30108f718f92721af3b95e74349a'
TRAIN_BATCHES = ['data_batch_{}'.format(i) for i in range(1, 6)]
TEST_BATCHES = ['test_batch']
#: The class names in label order (0..9), as the official batches.meta has them.
CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
           'truck')
OFFICIAL_LABEL = 'CIFAR-10'


class _SafeUnpickler(pickle.Unpickler):
    """Admits numpy arrays and builtin containers only."""
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy', 'ndarray'),
               ('numpy', 'dtype'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
               ('_codecs', 'encode')}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError('CIFAR batch refers to {}.{}, which the official '
                                     'files never do'.format(module, name))


def _read_batch(raw, source):
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding='bytes').load()
    except Exception as e:
        raise InvalidValue('{} is not a CIFAR-10 python batch: {}'.format(source, e)) from e
    if not isinstance(d, dict):
        raise InvalidValue('{} is not a CIFAR-10 python batch: it holds a {}, expected a '
                           'dict with "data" and "labels"'.format(source, type(d).__name__))
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if 'data' not in d or 'labels' not in d:
        raise InvalidValue('{} lacks the "data" and "labels" entries of a CIFAR-10 batch'
                         .format(source))
    data, labels = numpy.asarray(d['data']), numpy.asarray(d['labels'])
    # checked before any cast: a cast would wrap 300 to 44, or -7 to 249
    if data.dtype.kind not in 'iu' or (data.size and (data.min() < 0 or data.max() > 255)):
        raise InvalidValue('{}: data must be uint8 pixels (0..255), got dtype {}{}'.format(
            source, data.dtype, ' with values from {} to {}'.format(data.min(), data.max())
            if data.size and data.dtype.kind in 'iuf' else ''))
    if labels.dtype.kind not in 'iu' or (labels.size and (labels.min() < 0 or
                                                          labels.max() > 9)):
        raise InvalidValue('{}: labels must be integers 0..9, got dtype {}{}'.format(
            source, labels.dtype, ' with values from {} to {}'.format(
                labels.min(), labels.max()) if labels.size and labels.dtype.kind in 'iuf'
            else ''))
    data, labels = data.astype(numpy.uint8), labels.astype(numpy.int32)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise InvalidValue('{}: data must be (N, 3072) with N labels, got {} and {} labels'
                         .format(source, data.shape, len(labels)))
    return data, labels


def _read_from_tarball(path):
    batches = {}
    try:
        with tarfile.open(path, 'r:gz') as tar:
            for name in TRAIN_BATCHES + TEST_BATCHES:
                member = '{}/{}'.format(FOLDER, name)
                try:
                    raw = tar.extractfile(member).read()
                except (KeyError, AttributeError):
                    raise InvalidValue('{} has no {} (not the official CIFAR-10 python '
                                       'tarball?)'.format(path, member)) from None
                batches[name] = _read_batch(raw, '{}:{}'.format(path, member))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise InvalidValue('{} is not a readable CIFAR-10 tarball (truncated or damaged?): '
                           '{}: {}'.format(path, type(e).__name__, e)) from e
    return batches


def _read_from_folder(path):
    batches = {}
    for name in TRAIN_BATCHES + TEST_BATCHES:
        file = os.path.join(path, name)
        if not os.path.exists(file):
            raise InvalidValue('{} has no {}'.format(path, name))
        with open(file, 'rb') as f:
            batches[name] = _read_batch(f.read(), file)
    return batches


def _read(path):
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, FOLDER)):
            return _read_from_folder(os.path.join(path, FOLDER))
        if os.path.exists(os.path.join(path, TARBALL)):
            return _read_from_tarball(os.path.join(path, TARBALL))
        return _read_from_folder(path)
    return _read_from_tarball(path)


def locate(path=None, download_missing=True, cache=None):
    """Where the CIFAR-10 data is (tarball or folder), downloading it if allowed."""
    path = path or os.environ.get('BRANCHYNET_CIFAR10')
    if path:
        if not os.path.exists(path):
            raise FileNotFoundError('CIFAR-10 path {} does not exist (expected {}, a {} '
                                    'folder, or an image-folder copy: {})'.format(
                                        path, TARBALL, FOLDER, imagefolder.LAYOUT))
        return path
    cache = cache or data_dir('cifar10')
    if os.path.exists(os.path.join(cache, FOLDER)):
        return os.path.join(cache, FOLDER)
    cached = os.path.join(cache, TARBALL)
    if os.path.exists(cached):
        if file_digest(cached) == MD5:
            return cached
        print('[cifar10] {} fails its md5 check (truncated or damaged?); it will be '
              'replaced'.format(cached), file=sys.stderr)
        os.unlink(cached)
    if not download_missing:
        return None
    dest = os.path.join(cache, TARBALL)
    print('[cifar10] downloading {} (163 MB)'.format(URL), file=sys.stderr)
    try:
        download(URL, dest, digest=MD5)
    except OSError as e:
        raise DataUnavailableError(
            'CIFAR-10 could not be downloaded ({}). Download {} elsewhere (md5 {}) and '
            'put it in {}, or point BRANCHYNET_CIFAR10 (the driver: --cifar10 PATH) at it, '
            'at its extracted {} folder, or at an image-folder copy (a folder or '
            '.tar.gz with train/<class>/*.jpg, test/<class>/*.jpg).'.format(
                e, TARBALL, MD5, cache, FOLDER)) from e
    return dest


def available(path=None):
    """True if CIFAR-10 can be read without downloading."""
    return locate(path, download_missing=False) is not None


def verify_tarball(path):
    """Raise ValueError unless ``path`` has the official tarball's md5."""
    actual = file_digest(path)
    if actual != MD5:
        raise InvalidValue('{} has md5 {}, expected {} (the official {})'.format(
            path, actual, MD5, TARBALL))


def data_source(path=None):
    """Which CIFAR-10 ``get_raw_data(path)`` reads, without reading any image:
    ``{'label', 'official', 'path', 'sha256'}``. The official batches give
    ``'CIFAR-10'`` (sha256 None); an image-folder copy ``'CIFAR-10 (JPEG
    copy)'`` (``'CIFAR-10 (image-folder copy)'`` when it holds no JPEG file)
    and the sha256 of its bytes. Nothing is downloaded."""
    path = path or os.environ.get('BRANCHYNET_CIFAR10')
    if path and os.path.exists(path) and imagefolder.is_image_folder(path):
        description = imagefolder.describe(path, classes=CLASSES)
        return {'label': 'CIFAR-10 ({} copy)'.format(
                    'JPEG' if 'JPEG' in description.formats else 'image-folder'),
                'official': False, 'path': os.path.abspath(path),
                'sha256': description.sha256}
    return {'label': OFFICIAL_LABEL, 'official': True, 'path': path, 'sha256': None}


def source_label(path=None):
    """``'CIFAR-10'``, or what an image-folder copy is called (``data_source``)."""
    return data_source(path)['label']


def _read_image_folder(path):
    d = imagefolder.load(path, classes=CLASSES)
    if d.x_train.shape[1:] != (3, 32, 32):
        raise InvalidValue('{}: CIFAR-10 images are 3x32x32 (colour), this copy\'s are '
                           '{}x{}x{}'.format(path, *d.x_train.shape[1:]))
    return (imagefolder.to_float(d.x_train), d.y_train, imagefolder.to_float(d.x_test),
            d.y_test)


def get_raw_data(path=None):
    """``x_train (50000,3,32,32) float32 in [0,1], y_train int32, x_test, y_test``
    (pixels / 255, nothing else). From an image-folder copy the samples of
    each split come in ``imagefolder``'s fixed seeded order, not the
    official one."""
    source = locate(path)
    if imagefolder.is_image_folder(source):
        return _read_image_folder(source)
    batches = _read(source)

    def stack(names):
        x = numpy.concatenate([batches[n][0] for n in names])
        y = numpy.concatenate([batches[n][1] for n in names])
        return (x.reshape(-1, 3, 32, 32).astype(numpy.float32) / 255.), y

    x_train, y_train = stack(TRAIN_BATCHES)
    x_test, y_test = stack(TEST_BATCHES)
    return x_train, y_train, x_test, y_test


def unpickle(file):
    """One CIFAR batch file as a dict with str keys (read without running code)."""
    with open(file, 'rb') as f:
        d = _SafeUnpickler(f, encoding='bytes').load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def preprocessing(data):
    """ZCA whitening fitted on ``data`` (N, D): returns ``(components, mean,
    whitened)`` with ``whitened = (data - mean) @ components.T`` and
    ``components = U diag(1/sqrt(S)) U^T`` from the eigendecomposition of the
    (symmetric) covariance by ``scipy.linalg.eigh`` (the original took the
    SVD of the same matrix, which gives the same U and S; no regulariser, as
    the original)."""
    data = numpy.asarray(data, dtype=numpy.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    sigma = centred.T.dot(centred) / len(centred)
    s, u = scipy.linalg.eigh(sigma)
    s = numpy.clip(s, 0., None)  # rounding can leave tiny negative eigenvalues
    with numpy.errstate(divide='ignore'):
        components = (u * (1. / numpy.sqrt(s))).dot(u.T)
    return components, mean, centred.dot(components.T)


def minmax_per_image(data):
    """Every row shifted to minimum 0 and scaled to maximum 1 (float32)."""
    data = numpy.array(data, dtype=numpy.float64).reshape(len(data), -1)
    data -= data.min(axis=1, keepdims=True)
    peak = data.max(axis=1, keepdims=True)
    peak[peak == 0] = 1.
    return (data / peak).astype(numpy.float32)


def get_data(whitening=1, path=None):
    """CIFAR-10 preprocessed as the original's ``cifar10.get_data``: with
    ``whitening=1`` ZCA whitening fitted on the training pixels (0..255) and
    applied to both sets, then, always, per-image min-max scaling to [0, 1].
    Returns ``(N,3,32,32)`` float32 images and int32 labels."""
    if whitening not in (0, 1):
        raise ValueError('whitening must be 0 or 1, got {!r}'.format(whitening))
    x_train, y_train, x_test, y_test = get_raw_data(path)
    train = x_train.reshape(len(x_train), -1) * 255.
    test = x_test.reshape(len(x_test), -1) * 255.
    if whitening == 1:
        components, mean, train = preprocessing(train)
        test = (test - mean).dot(components.T)
    return (minmax_per_image(train).reshape(-1, 3, 32, 32), y_train,
            minmax_per_image(test).reshape(-1, 3, 32, 32), y_test)


def select_classes(data, numclasses=2):
    """The samples of classes ``0 .. numclasses-1`` of ``(x_train, y_train,
    x_test, y_test)``."""
    x_train, y_train, x_test, y_test = data
    keep_train, keep_test = y_train < numclasses, y_test < numclasses
    return x_train[keep_train], y_train[keep_train], x_test[keep_test], y_test[keep_test]


def get_data_dev(numclasses=2):
    """``get_data()`` restricted to the first ``numclasses`` classes."""
    return select_classes(get_data(), numclasses)
