"""CIFAR-100 (fine labels) with global contrast normalisation, the original's
``cifar100gcn``: the same recipe as ``cifar10gcn``.

The data is the official ``cifar-100-python.tar.gz`` (or its extracted
``cifar-100-python`` folder with the ``train`` and ``test`` files), given as
``path``, ``$BRANCHYNET_CIFAR100`` or found in ``datasets/data/cifar100``.
It is not downloaded. ``unpickle`` and ``preprocessing`` are the original's
helpers, as in ``cifar10gcn``.
"""
import io
import os
import tarfile

import numpy

from . import DataUnavailableError, cifar10, data_dir
from .cifar10gcn import (global_contrast_normalize, normalise,  # noqa: F401
                         preprocessing, unpickle)

TARBALL = 'cifar-100-python.tar.gz'
FOLDER = 'cifar-100-python'


def _read(raw, source):
    d = cifar10._SafeUnpickler(io.BytesIO(raw), encoding='bytes').load()
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if 'data' not in d or 'fine_labels' not in d:
        raise ValueError('{} lacks the "data" and "fine_labels" entries of a CIFAR-100 file'
                         .format(source))
    data = numpy.asarray(d['data'], dtype=numpy.uint8)
    labels = numpy.asarray(d['fine_labels'], dtype=numpy.int32)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError('{}: data must be (N, 3072) with N labels, got {}'.format(
            source, data.shape))
    return data, labels


def locate(path=None):
    """The tarball or folder holding CIFAR-100's ``train`` and ``test``."""
    path = path or os.environ.get('BRANCHYNET_CIFAR100')
    candidates = [path] if path else [data_dir('cifar100', FOLDER), data_dir('cifar100', TARBALL),
                                      data_dir('cifar100')]
    for c in candidates:
        if os.path.isfile(c) or os.path.isfile(os.path.join(c, 'train')):
            return c
    raise DataUnavailableError(
        'CIFAR-100 not found (tried {}). Download {} (python version) and put it in {} or '
        'point BRANCHYNET_CIFAR100 at it or at its extracted {} folder.'.format(
            ', '.join(candidates), TARBALL, data_dir('cifar100'), FOLDER))


def get_raw_data(path=None):
    """Images / 255 as ``(N,3,32,32)`` float32 and fine labels (int32)."""
    where = locate(path)
    parts = {}
    for name in ('train', 'test'):
        if os.path.isdir(where):
            with open(os.path.join(where, name), 'rb') as f:
                raw = f.read()
        else:
            with tarfile.open(where, 'r:gz') as tar:
                member = tar.extractfile('{}/{}'.format(FOLDER, name))
                if member is None:
                    raise ValueError('{} has no {}/{}'.format(where, FOLDER, name))
                raw = member.read()
        x, y = _read(raw, '{}:{}'.format(where, name))
        parts[name] = (x.reshape(-1, 3, 32, 32).astype(numpy.float32) / 255., y)
    return parts['train'] + parts['test']


def get_data(gcn=1, whitening=1, path=None):
    """As ``cifar10gcn.get_data`` on CIFAR-100 (100 fine classes)."""
    x_train, y_train, x_test, y_test = get_raw_data(path)
    train, test = normalise(x_train.reshape(len(x_train), -1).astype(numpy.float64),
                            x_test.reshape(len(x_test), -1).astype(numpy.float64), gcn)
    return train.reshape(-1, 3, 32, 32), y_train, test.reshape(-1, 3, 32, 32), y_test


def get_data_dev(numclasses=2):
    """``get_data()`` restricted to the first ``numclasses`` classes."""
    return cifar10.select_classes(get_data(), numclasses)
