"""Datasets stored as one npz file with ``train_x, train_y, test_x, test_y``.

This is the layout of the original's preprocessed CIFAR-10 (``data.npz``);
any channel count and image size is accepted, so every network can run on a
user's own data (``--dataset path/to/file.npz``). The common other spelling,
``x_train, y_train, x_test, y_test``, is read too. Images are float32, or
uint8 (0..255), which ``load`` scales to float32 in [0, 1] and says so.
"""
import os
import sys

import numpy

from branchynet.io.fileio import atomic_write
from branchynet.validation import InvalidType, InvalidValue

KEYS = ('train_x', 'train_y', 'test_x', 'test_y')
#: The other spelling ``load`` reads, key for key with ``KEYS``.
OTHER_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
#: Image dtypes accepted: float32 as it is, uint8 scaled to [0, 1] by ``load``.
IMAGE_DTYPES = (numpy.float32, numpy.uint8)


def validate(arrays, num_classes=None, source='dataset'):
    """Check the four arrays; raise ValueError/TypeError naming the problem."""
    _check_keys(arrays, source)
    check_headers({k: (arrays[k].shape, arrays[k].dtype) for k in KEYS}, source)
    for split in ('train', 'test'):
        x, y = arrays[split + '_x'], arrays[split + '_y']
        # without a class count, labels must still fit the int32 they become
        # (2 ** 32 + 3 must not turn into 3)
        top = numpy.iinfo(numpy.int32).max if num_classes is None else num_classes - 1
        if len(y) and (y.min() < 0 or y.max() > top):
            raise InvalidValue('{}: {}_y labels must be 0..{}{}, got values from {} to {}'.format(
                source, split, top, ' (int32)' if num_classes is None else '', y.min(), y.max()))
        if not numpy.isfinite(x).all():
            raise InvalidValue('{}: {}_x contains NaN or infinite values'.format(source, split))


def _check_keys(names, source):
    missing = [k for k in KEYS if k not in names]
    if missing:
        raise InvalidValue('{} lacks key(s) {}; expected keys {}'.format(
            source, ', '.join(missing), ', '.join(KEYS)))


def stored_keys(names, source):
    """``{key of KEYS: the name it is stored under}`` for a file holding the
    entries ``names``, in either spelling (``KEYS`` or ``OTHER_KEYS``); else an
    error listing the keys the file has."""
    for spelling in (KEYS, OTHER_KEYS):
        if all(k in names for k in spelling):
            return dict(zip(KEYS, spelling))
    closest = max((KEYS, OTHER_KEYS), key=lambda spelling: sum(k in names for k in spelling))
    raise InvalidValue('{} lacks key(s) {}: expected {} (or {}); the file has: {}'.format(
        source, ', '.join(k for k in closest if k not in names), ', '.join(KEYS),
        ', '.join(OTHER_KEYS), ', '.join(sorted(names)) or 'no entries'))


def check_headers(headers, source='dataset'):
    """The shapes and dtypes of the four entries (``{key: (shape, dtype)}``),
    checked; ``load`` calls it on the npz headers before reading any entry,
    so a forged shape costs nothing."""
    for split in ('train', 'test'):
        (x_shape, x_dtype), (y_shape, y_dtype) = headers[split + '_x'], headers[split + '_y']
        if x_dtype not in IMAGE_DTYPES:
            raise InvalidType('{}: {}_x must be float32, got {} (uint8 images are read '
                              'too, scaled to [0, 1])'.format(source, split, x_dtype))
        if len(x_shape) != 4:
            raise InvalidValue('{}: {}_x must have shape (N, channels, height, width), got {}'
                               .format(source, split, tuple(x_shape)))
        if not numpy.issubdtype(y_dtype, numpy.integer):
            raise InvalidType('{}: {}_y must hold integer labels, got {}'.format(
                source, split, y_dtype))
        if len(y_shape) != 1 or y_shape[0] != x_shape[0]:
            raise InvalidValue('{}: {}_y must have one label per sample: {} samples in '
                               '{}_x but {}_y has shape {}'.format(source, split, x_shape[0],
                                                                  split, split, tuple(y_shape)))
    if tuple(headers['train_x'][0][1:]) != tuple(headers['test_x'][0][1:]):
        raise InvalidValue('{}: train_x samples are {} but test_x samples are {}'.format(
            source, tuple(headers['train_x'][0][1:]), tuple(headers['test_x'][0][1:])))


def load(path, num_classes=None, note=None):
    """``(x_train, y_train, x_test, y_test)`` from an npz file, validated.

    The keys may be spelled either way (``KEYS``, ``OTHER_KEYS``). Only the
    four entries are read, and only after their headers (shapes and dtypes)
    passed ``check_headers``: memory is what the data declares, whatever else
    the file holds. uint8 images become float32 in [0, 1] (divided by 255),
    said in one line to ``note`` (default: printed to stderr)."""
    if not os.path.exists(path):
        raise FileNotFoundError('dataset file {} does not exist'.format(path))
    from branchynet.io import safenpz
    with safenpz.open_npz(path, 'a dataset npz file (keys {})'.format(', '.join(KEYS))) as f:
        names = stored_keys(f.files, path)
        check_headers({k: safenpz.entry_header(f, names[k], path) for k in KEYS},
                      source=str(path))
        arrays = {k: safenpz.read_array(f, names[k], path) for k in KEYS}
    scaled = [names[k] for k in ('train_x', 'test_x') if arrays[k].dtype == numpy.uint8]
    for k in ('train_x', 'test_x'):
        if arrays[k].dtype == numpy.uint8:
            arrays[k] = arrays[k].astype(numpy.float32) / numpy.float32(255)
    if scaled:
        (note or (lambda line: print(line, file=sys.stderr)))(
            '{}: {} held uint8 images; scaled to float32 in [0, 1] (divided by 255)'.format(
                path, ' and '.join(scaled)))
    validate(arrays, num_classes, source=str(path))
    return (arrays['train_x'], arrays['train_y'].astype(numpy.int32),
            arrays['test_x'], arrays['test_y'].astype(numpy.int32))


def save(path, x_train, y_train, x_test, y_test):
    """Write the four arrays in this layout (validated, atomically)."""
    arrays = dict(zip(KEYS, (x_train, y_train, x_test, y_test)))
    validate(arrays, source=str(path))
    with atomic_write(path) as f:
        numpy.savez(f, **arrays)
