"""Argument checks shared by the library; every error names what was wrong.

Errors about bad input are of the classes below, so a caller (the driver)
can print them as one line while any other exception, a bug, keeps its
traceback.
"""
import collections.abc
import numbers
import reprlib

import numpy


class InputError(Exception):
    """Bad input from a caller or user; the message says what was wrong and
    what is expected."""


class InvalidValue(InputError, ValueError):
    """A value of the right kind but outside what is accepted."""


class InvalidType(InputError, TypeError):
    """A value of the wrong kind."""


def is_real_number(value):
    """A Python or numpy real number (bool excluded)."""
    return _is_real_number(value) or isinstance(value, numpy.integer)


def _is_real_number(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)) or \
        (isinstance(value, numpy.generic) and numpy.issubdtype(type(value), numpy.floating))


_BRIEF = reprlib.Repr()
_BRIEF.maxlist = _BRIEF.maxtuple = 10
_BRIEF.maxother = _BRIEF.maxstring = 200


def brief(value):
    """``repr(value)`` cut short (at most 10 items of a list, 200 characters
    otherwise), so a message about a huge input stays one short line."""
    return _BRIEF.repr(value)


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
        raise InvalidValue('{} must be {}, got {!r}'.format(name, expected, value))
    if is_real_number(value) or (isinstance(value, numpy.ndarray) and value.ndim == 0):
        values = [value] * num_early_exits
    else:
        if not isinstance(value, (collections.abc.Sequence, numpy.ndarray)) or \
                isinstance(value, range):
            # a dict would give its keys and a set an arbitrary order
            raise InvalidValue('{} must be {}, got a {}: {!r}'.format(
                name, expected, type(value).__name__, value))
        values = list(value)
        if len(values) != num_early_exits:
            raise InvalidValue('{} must be {}, got {} value(s): {}'.format(
                name, expected, len(values), brief(value)))
    result = []
    for i, v in enumerate(values):
        if isinstance(v, numpy.ndarray) and v.ndim == 0:
            v = v.item()
        if not is_real_number(v):
            raise InvalidValue('{}[{}] must be a number, got {!r}; expected {}'.format(
                name, i, v, expected))
        try:
            v = float(v)
        except OverflowError:
            raise InvalidValue('{}[{}] is an integer too large for a float; expected {} '
                               '(use float("inf") for "always exit")'.format(
                                   name, i, expected)) from None
        if numpy.isnan(v):
            raise InvalidValue('{}[{}] is NaN; expected {}'.format(name, i, expected))
        if v < 0:
            raise InvalidValue('{}[{}] is negative ({}); expected {}'.format(
                name, i, v, expected))
        if upper is not None and v > upper:
            raise InvalidValue('{}[{}] is {}, above {:g}; expected {}'.format(
                name, i, v, upper, expected))
        result.append(v)
    return result


def validate_inputs(x, input_shape=None, name='x'):
    """Check a batch of samples: an array of float32, finite, right shape."""
    import chainer
    if isinstance(x, chainer.Variable):
        raise InvalidType('{} must be a numpy or cupy array, got chainer.Variable (pass '
                          '{}.array)'.format(name, name))
    if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
        raise InvalidType('{} must be a numpy or cupy array, got {}'.format(
            name, type(x).__name__))
    if x.dtype != numpy.float32:
        raise InvalidType('{} must have dtype float32, got {} (convert with '
                        'x.astype(numpy.float32))'.format(name, x.dtype))
    if input_shape is not None:
        expected = (len(input_shape) + 1,)
        if x.ndim != expected[0]:
            raise InvalidValue('{} must have {} dimensions (N, {}), got shape {}'.format(
                name, expected[0], ', '.join(map(str, input_shape)), tuple(x.shape)))
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise InvalidValue('{} must have per-sample shape {} (channels, height, '
                             'width), got {}'.format(name, tuple(input_shape),
                                                    tuple(x.shape[1:])))
    if x.ndim < 2:
        raise InvalidValue('{} must be a batch with a leading sample axis, got shape {}'
                         .format(name, tuple(x.shape)))
    if len(x) == 0:
        raise InvalidValue('{} is empty: at least one sample is needed'.format(name))
    xp = _xp(x)
    if not bool(xp.isfinite(x).all()):
        raise InvalidValue('{} contains NaN or infinite values'.format(name))


def validate_labels(t, num_samples, num_classes=None, name='t'):
    """Check labels: 1-d integers, one per sample, within 0..num_classes-1."""
    if not hasattr(t, 'shape') or not hasattr(t, 'dtype'):
        raise InvalidType('{} must be a numpy or cupy array of int32 labels, got {}'
                        .format(name, type(t).__name__))
    if not numpy.issubdtype(t.dtype, numpy.integer):
        raise InvalidType('{} must hold integer labels (int32), got dtype {}'.format(
            name, t.dtype))
    if t.ndim != 1 or len(t) != num_samples:
        raise InvalidValue('{} must have shape ({},) (one label per sample), got {}'
                         .format(name, num_samples, tuple(t.shape)))
    if num_classes is not None and len(t):
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise InvalidValue('{} must be within 0..{}, got values from {} to {}'.format(
                name, num_classes - 1, lo, hi))


def _xp(x):
    import chainer
    return chainer.backend.get_array_module(x)


def as_labels(t, num_samples, num_classes=None, name='t'):
    """``t`` checked (see ``validate_labels``) and as int32, the dtype Chainer's
    losses need; any integer dtype is accepted when its values fit."""
    validate_labels(t, num_samples, num_classes, name)
    if t.dtype != numpy.int32 and len(t):
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > numpy.iinfo(numpy.int32).max:
            raise InvalidValue('{} must be within 0..(number of classes - 1), got values '
                               'from {} to {}'.format(name, lo, hi))
    return t.astype(numpy.int32, copy=False)


def validate_batchsize(value, name='batchsize'):
    """A positive integer (Python or numpy)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numpy.integer)) \
            or value < 1:
        raise InvalidValue('{} must be a positive integer, got {!r}'.format(name, value))
    return int(value)


def validate_weights(value, count, name='exit_weights'):
    """A list of ``count`` finite, non-negative numbers, as floats."""
    expected = 'a list of {} non-negative numbers, all finite (one per exit)'.format(count)
    if isinstance(value, (str, bytes)) or \
            not isinstance(value, (collections.abc.Sequence, numpy.ndarray)):
        raise InvalidValue('{} must be {}, got {!r}'.format(name, expected, value))
    value = list(value)
    if len(value) != count:
        raise InvalidValue('{} must be {}, got {} value(s): {}'.format(
            name, expected, len(value), brief(value)))
    for i, w in enumerate(value):
        if not is_real_number(w) or not numpy.isfinite(float(w)) or w < 0:
            raise InvalidValue('{}[{}] is {!r}; {} must be {}'.format(
                name, i, w if not is_real_number(w) else float(w), name, expected))
    return [float(w) for w in value]


def validate_count(value, name, minimum=0):
    """An integer (Python or numpy) of at least ``minimum``, or None (unset)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numpy.integer)) \
            or value < minimum:
        raise InvalidValue('{} must be an integer >= {}, got {!r}'.format(name, minimum, value))
    return int(value)


def nonfinite_params(link):
    """Names of ``link``'s parameters holding NaN or infinite values (one
    device synchronisation for all of them; names only when some do)."""
    params = [(name, p.array) for name, p in link.namedparams() if p.array is not None]
    if not params:
        return []
    xp = _xp(params[0][1])
    if bool(xp.stack([xp.isfinite(a).all() for _, a in params]).all()):
        return []
    return [name for name, a in params if not bool(xp.isfinite(a).all())]


def nonfinite_optimizer_state(optimizer):
    """Names (``<parameter>/<entry>``, e.g. ``/trunk/0/W/v``) of ``optimizer``'s
    per-parameter state arrays holding NaN or infinite values (Adam's
    moments overflow on huge gradients while the weights stay finite)."""
    if optimizer is None or getattr(optimizer, 'target', None) is None:
        return []
    states = [('{}/{}'.format(name, key), a)
              for name, p in optimizer.target.namedparams()
              for key, a in (getattr(getattr(p, 'update_rule', None), 'state', None)
                             or {}).items()
              if hasattr(a, 'dtype') and a.dtype.kind == 'f']
    if not states:
        return []
    xp = _xp(states[0][1])
    if bool(xp.stack([xp.isfinite(a).all() for _, a in states]).all()):
        return []
    return [name for name, a in states if not bool(xp.isfinite(a).all())]


def require_finite_params(link, what):
    """Refuse (``InvalidValue``) to ``what`` a model with non-finite weights."""
    bad = nonfinite_params(link)
    if bad:
        raise InvalidValue('refusing to {}: parameter(s) {}{} hold NaN or infinite values '
                           '(training diverged?)'.format(what, ', '.join(bad[:3]),
                                                         ', ...' if len(bad) > 3 else ''))


#: The largest run seed: numpy seeds are 0..2**32-1 and joint training uses seed + 1.
MAX_SEED = 2 ** 32 - 2


def validate_seed(value, name='seed'):
    """A run seed: an integer in 0..``MAX_SEED``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numpy.integer)) \
            or not 0 <= value <= MAX_SEED:
        raise InvalidValue('{} must be an integer in 0..{}, got {!r}'.format(
            name, MAX_SEED, value))
    return int(value)


def require_network(net, name='net'):
    """``net`` when it is a ``BranchyNet``; else ``InvalidType`` naming it.
    (The class is recognised by its module and name: this bottom module
    imports nothing of the package above it.)"""
    if not any(c.__name__ == 'BranchyNet' and c.__module__ == 'branchynet.net'
               for c in type(net).__mro__):
        raise InvalidType('{} must be a BranchyNet (e.g. from networks.<name>.get_network()), '
                          'got {}'.format(name, type(net).__name__))
    return net
