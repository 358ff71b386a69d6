"""CIFAR-10 with global contrast normalisation, the original's ``cifar10gcn``.

``get_data(gcn=1, whitening=1)``: pixels / 255, minus the per-pixel mean of
the training set (both sets), then, with ``gcn=1``, per-sample global
contrast normalisation by the standard deviation (ddof 1). ``whitening`` is
accepted and ignored: the original's whitening step was commented out. This
is the recipe ``pcifar10`` rebuilds its ``data.npz`` with. ``unpickle`` (one
batch file as a dict, read without running code) and ``preprocessing`` (ZCA
whitening) are the original's helpers of this module, shared with ``cifar10``.
"""
import numpy

from . import cifar10
from .cifar10 import preprocessing, unpickle  # noqa: F401  (the original's names)


def global_contrast_normalize(X, scale=1., subtract_mean=True, use_std=False,
                              sqrt_bias=0., min_divisor=1e-8):
    """Per row of the 2-D array ``X``: optionally subtract its mean, then divide
    by ``sqrt(sqrt_bias + var)`` (``use_std``, ddof 1 unless a row has one
    value) or by ``sqrt(sqrt_bias + sum of squares)``, over ``scale``;
    divisors below ``min_divisor`` are left at 1. Returns a new array."""
    X = numpy.asarray(X)
    if X.ndim != 2:
        raise ValueError('X must be 2-dimensional (samples x features), got shape {}'
                         .format(X.shape))
    scale = float(scale)
    if scale < min_divisor:
        raise ValueError('scale must be at least min_divisor ({}), got {}'.format(
            min_divisor, scale))
    X = X - X.mean(axis=1, keepdims=True) if subtract_mean else X.copy()
    if use_std:
        ddof = 1 if X.shape[1] > 1 else 0
        normalizers = numpy.sqrt(sqrt_bias + X.var(axis=1, ddof=ddof)) / scale
    else:
        normalizers = numpy.sqrt(sqrt_bias + (X ** 2).sum(axis=1)) / scale
    normalizers[normalizers < min_divisor] = 1.
    X /= normalizers[:, None]
    return X


def normalise(train, test, gcn=1):
    """The recipe on flat images in [0, 1]: float32 ``(train, test)``."""
    if gcn not in (0, 1):
        raise ValueError('gcn must be 0 or 1, got {!r}'.format(gcn))
    mean = train.mean(axis=0)
    train, test = train - mean, test - mean
    if gcn == 1:
        train = global_contrast_normalize(train, use_std=True)
        test = global_contrast_normalize(test, use_std=True)
    return train.astype(numpy.float32), test.astype(numpy.float32)


def get_data(gcn=1, whitening=1):
    """``(N,3,32,32)`` float32 images and int32 labels, train then test."""
    x_train, y_train, x_test, y_test = cifar10.get_raw_data()
    train, test = normalise(x_train.reshape(len(x_train), -1).astype(numpy.float64),
                            x_test.reshape(len(x_test), -1).astype(numpy.float64), gcn)
    return train.reshape(-1, 3, 32, 32), y_train, test.reshape(-1, 3, 32, 32), y_test


def get_data_dev(numclasses=2):
    """``get_data()`` restricted to the first ``numclasses`` classes."""
    return cifar10.select_classes(get_data(), numclasses)
