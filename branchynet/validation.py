"""Argument checks shared by the library; every error names what was wrong."""
import numbers

import numpy


def _is_real_number(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)) or \
        (isinstance(value, numpy.generic) and numpy.issubdtype(type(value), numpy.floating))


def validate_thresholds(value, num_early_exits, name='thresholdExits', upper=None):
    """Return ``value`` as a list with one float per early exit.

    Accepts a scalar (used for every early exit) or a sequence of exactly
    ``num_early_exits`` numbers. Entropy thresholds (nats) must be
    non-negative (``inf``: every sample exits); with ``upper`` (1 for the
    probability measures) they must also be at most ``upper``.
    """
    kind = 'non-negative numbers' if upper is None else 'numbers in [0, {:g}]'.format(upper)
    expected = ('a {} or a list of {} {} (one per early exit)'.format(
        kind[:-1], num_early_exits, kind))
    if isinstance(value, (str, bytes)):
        raise ValueError('{} must be {}, got {!r}'.format(name, expected, value))
    if _is_real_number(value) or (isinstance(value, numpy.ndarray) and value.ndim == 0):
        values = [value] * num_early_exits
    else:
        try:
            values = list(value)
        except TypeError:
            raise ValueError('{} must be {}, got {!r}'.format(name, expected, value)) from None
        if len(values) != num_early_exits:
            raise ValueError('{} must be {}, got {} value(s): {!r}'.format(
                name, expected, len(values), value))
    result = []
    for i, v in enumerate(values):
        if isinstance(v, numpy.ndarray) and v.ndim == 0:
            v = v.item()
        if not _is_real_number(v):
            raise ValueError('{}[{}] must be a number, got {!r}; expected {}'.format(
                name, i, v, expected))
        v = float(v)
        if numpy.isnan(v):
            raise ValueError('{}[{}] is NaN; expected {}'.format(name, i, expected))
        if v < 0:
            raise ValueError('{}[{}] is negative ({}); expected {}'.format(
                name, i, v, expected))
        if upper is not None and v > upper:
            raise ValueError('{}[{}] is {}, above {:g}; expected {}'.format(
                name, i, v, upper, expected))
        result.append(v)
    return result


def validate_inputs(x, input_shape=None, name='x'):
    """Check a batch of samples: an array of float32, finite, right shape."""
    if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
        raise TypeError('{} must be a numpy or cupy array, got {}'.format(
            name, type(x).__name__))
    if x.dtype != numpy.float32:
        raise TypeError('{} must have dtype float32, got {} (convert with '
                        'x.astype(numpy.float32))'.format(name, x.dtype))
    if input_shape is not None:
        expected = (len(input_shape) + 1,)
        if x.ndim != expected[0]:
            raise ValueError('{} must have {} dimensions (N, {}), got shape {}'.format(
                name, expected[0], ', '.join(map(str, input_shape)), tuple(x.shape)))
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise ValueError('{} must have per-sample shape {} (channels, height, '
                             'width), got {}'.format(name, tuple(input_shape),
                                                    tuple(x.shape[1:])))
    if x.ndim < 2:
        raise ValueError('{} must be a batch with a leading sample axis, got shape {}'
                         .format(name, tuple(x.shape)))
    if len(x) == 0:
        raise ValueError('{} is empty: at least one sample is needed'.format(name))
    xp = _xp(x)
    if not bool(xp.isfinite(x).all()):
        raise ValueError('{} contains NaN or infinite values'.format(name))


def validate_labels(t, num_samples, num_classes=None, name='t'):
    """Check labels: 1-d integers, one per sample, within 0..num_classes-1."""
    if not hasattr(t, 'shape') or not hasattr(t, 'dtype'):
        raise TypeError('{} must be a numpy or cupy array of int32 labels, got {}'
                        .format(name, type(t).__name__))
    if not numpy.issubdtype(t.dtype, numpy.integer):
        raise TypeError('{} must hold integer labels (int32), got dtype {}'.format(
            name, t.dtype))
    if t.ndim != 1 or len(t) != num_samples:
        raise ValueError('{} must have shape ({},) (one label per sample), got {}'
                         .format(name, num_samples, tuple(t.shape)))
    if num_classes is not None and len(t):
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError('{} must be within 0..{}, got values from {} to {}'.format(
                name, num_classes - 1, lo, hi))


def _xp(x):
    import chainer
    return chainer.backend.get_array_module(x)
