"""Preprocessed CIFAR-10, the original's ``datasets/data/pcifar10/data.npz``.

The original's file (on a private drive) is no longer reachable; when it is
missing it is rebuilt from CIFAR-10 with the recipe it most likely used:
pixels / 255, minus the per-pixel mean of the training set, then per-sample
global contrast normalisation (minus the sample's mean over its 3072 values,
divided by its standard deviation with ddof 1; divisors below 1e-8 left at 1).

The file records the CIFAR-10 it was built from (``source``: the label of
``cifar10.data_source``, ``source_sha256``: an image-folder copy's sha256,
empty for the official batches). The official batches give ``data.npz``; an
image-folder copy its own ``data-<sha256 prefix>.npz`` beside it, so neither
replaces the other, and a file whose record does not match the source this
run reads is rebuilt, never reused. A ``data.npz`` without a record (the
original's, or one built before sources were recorded) counts as built from
the official batches.
"""
import os
import sys

import numpy

from branchynet.augment import contrast_normalize
from branchynet.io import safenpz
from branchynet.io.fileio import atomic_write
from . import cifar10, data_dir, npz


def path(source=None):
    """The file built from ``source`` (``cifar10.data_source()``; default the
    official batches)."""
    if source is None or source['official']:
        return data_dir('pcifar10', 'data.npz')
    return data_dir('pcifar10', 'data-{}.npz'.format(source['sha256'][:16]))


def data_source():
    """The CIFAR-10 this run's pcifar10 is built from (``cifar10.data_source``)."""
    return cifar10.data_source()


def source_label():
    """``'CIFAR-10'`` or what the image-folder copy is called."""
    return cifar10.source_label()


def recorded_source(file):
    """``(label, sha256)`` recorded in a pcifar10 file; ``('CIFAR-10', '')``
    for a file without a record."""
    with safenpz.open_npz(file, 'a pcifar10 data.npz') as f:
        if 'source' not in f.files:
            return cifar10.OFFICIAL_LABEL, ''
        return tuple(str(safenpz.read_array(f, k, file, max_bytes=1 << 12))
                     for k in ('source', 'source_sha256'))


def global_contrast_normalize(x, eps=1e-8):
    """Per sample: subtract the mean over all values, divide by the std (ddof 1).

    The same normalisation the augmentation applies to every variant."""
    return contrast_normalize(x, eps)


def preprocess(x_train, x_test):
    """The recipe on images already scaled to [0, 1]; float32 results."""
    mean = pixel_mean(x_train)
    return normalize(x_train, mean), normalize(x_test, mean)


def pixel_mean(x_train):
    """The per-pixel mean of the training images (float64)."""
    return x_train.astype(numpy.float64).mean(axis=0)


def normalize(x, mean):
    """Images in [0, 1] with the training set's ``pixel_mean`` subtracted, then
    globally contrast-normalised per image; float32."""
    return global_contrast_normalize(x - mean).astype(numpy.float32)


def get_data(redir=''):
    """``train_x, train_y, test_x, test_y`` from data.npz, building it if missing.
    ``redir`` (the original's argument) prefixes the original's relative path
    ``datasets/data/pcifar10/data.npz`` when given."""
    if redir:
        return npz.load(redir + 'datasets/data/pcifar10/data.npz', num_classes=10)
    source = cifar10.data_source()
    target = path(source)
    wanted = (source['label'], source['sha256'] or '')
    if os.path.exists(target) and recorded_source(target) != wanted:
        print('[pcifar10] {} was built from {} (sha256 {}), not from this run\'s {} '
              '(sha256 {}): rebuilding it'.format(target, *recorded_source(target), *wanted),
              file=sys.stderr)
    elif os.path.exists(target):
        return npz.load(target, num_classes=10)
    else:
        print('[pcifar10] {} is missing: building it from {} (pixels/255, per-pixel mean '
              'subtraction, global contrast normalisation)'.format(target, source['label']),
              file=sys.stderr)
    x_train, y_train, x_test, y_test = cifar10.get_raw_data(source['path'])
    x_train, x_test = preprocess(x_train, x_test)
    arrays = dict(zip(npz.KEYS, (x_train, y_train, x_test, y_test)))
    npz.validate(arrays, source=target)
    with atomic_write(target) as f:
        numpy.savez(f, source=numpy.array(wanted[0]), source_sha256=numpy.array(wanted[1]),
                    **arrays)
    return x_train, y_train, x_test, y_test



def get_data_dev(numclasses=2):
    """``get_data()`` restricted to the first ``numclasses`` classes."""
    return cifar10.select_classes(get_data(), numclasses)
