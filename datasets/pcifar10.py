"""Preprocessed CIFAR-10, the original's ``datasets/data/pcifar10/data.npz``.

The original's file (on a private drive) is no longer reachable; when it is
missing it is rebuilt from CIFAR-10 with the recipe it most likely used:
pixels / 255, minus the per-pixel mean of the training set, then per-sample
global contrast normalisation (minus the sample's mean over its 3072 values,
divided by its standard deviation with ddof 1; divisors below 1e-8 left at 1).
"""
import os
import sys

import numpy

from branchynet.augment import contrast_normalize
from . import cifar10, data_dir, npz


def path():
    return data_dir('pcifar10', 'data.npz')


def global_contrast_normalize(x, eps=1e-8):
    """Per sample: subtract the mean over all values, divide by the std (ddof 1).

    The same normalisation the augmentation applies to every variant."""
    return contrast_normalize(x, eps)


def preprocess(x_train, x_test):
    """The recipe on images already scaled to [0, 1]; float32 results."""
    mean = x_train.astype(numpy.float64).mean(axis=0)
    return (global_contrast_normalize(x_train - mean).astype(numpy.float32),
            global_contrast_normalize(x_test - mean).astype(numpy.float32))


def get_data(redir=''):
    """``train_x, train_y, test_x, test_y`` from data.npz, building it if missing.
    ``redir`` (the original's argument) prefixes the original's relative path
    ``datasets/data/pcifar10/data.npz`` when given."""
    if redir:
        return npz.load(redir + 'datasets/data/pcifar10/data.npz', num_classes=10)
    target = path()
    if not os.path.exists(target):
        print('[pcifar10] {} is missing: building it from CIFAR-10 (pixels/255, '
              'per-pixel mean subtraction, global contrast normalisation)'.format(target),
              file=sys.stderr)
        x_train, y_train, x_test, y_test = cifar10.get_raw_data()
        x_train, x_test = preprocess(x_train, x_test)
        npz.save(target, x_train, y_train, x_test, y_test)
    return npz.load(target, num_classes=10)



def get_data_dev(numclasses=2):
    """``get_data()`` restricted to the first ``numclasses`` classes."""
    return cifar10.select_classes(get_data(), numclasses)
