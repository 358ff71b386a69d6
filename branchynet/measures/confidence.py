"""Confidence of a softmax output, computed on numpy or cupy arrays alike."""
import math

import chainer
import numpy

from branchynet.validation import InvalidValue


def entropy(p, axis=1):
    """Entropy in nats, ``-sum p log p`` along ``axis``, with ``0 log 0 = 0``.

    ``p`` holds probability vectors (rows of a softmax output by default).
    Works on numpy and cupy arrays; the result lives on the same device.
    """
    xp = chainer.backend.get_array_module(p)
    p = xp.asarray(p)
    positive = p > 0
    # log(1) = 0 where p == 0, so those terms vanish without producing nan.
    logp = xp.log(xp.where(positive, p, 1))
    return -(p * logp).sum(axis=axis)


def entropy_from_logits(z):
    """Entropy (nats) of ``softmax(z)`` per row, computed from the logits in
    float64: ``log S - sum(e * d) / S`` with ``d = z - max z``, ``e = exp(d)``,
    ``S = sum e``. Equal to ``entropy(softmax(z))`` without rounding p to
    float32 first; used for the exit decisions."""
    xp = chainer.backend.get_array_module(z)
    d = z.astype(numpy.float64)
    d -= d.max(axis=1, keepdims=True)
    e = xp.exp(d)
    s = e.sum(axis=1)
    return xp.log(s) - (e * d).sum(axis=1) / s


def entropy_from_logits_row(row):
    """``entropy_from_logits`` of one sample given as a list of floats: the
    same formula in plain Python, which is several times faster than array
    calls for a single row (batch-size-1 routing)."""
    m = max(row)
    d = [v - m for v in row]
    e = [math.exp(v) for v in d]
    s = sum(e)
    return math.log(s) - sum(a * b for a, b in zip(e, d)) / s


def _probabilities64(z):
    xp = chainer.backend.get_array_module(z)
    d = z.astype(numpy.float64)
    d -= d.max(axis=1, keepdims=True)
    e = xp.exp(d)
    return e / e.sum(axis=1, keepdims=True)


def _row_probabilities(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


class Measure:
    """A confidence measure and its exit rule.

    Internally every measure is an *uncertainty score* (lower = more
    confident) and a sample leaves when its score is strictly below the
    exit's limit; ``limit(T)`` turns the user's threshold into that limit.
    """

    def __init__(self, name, rule, upper, batch, row, limit, stay_all, leave_all):
        self.name, self.rule, self.upper = name, rule, upper
        self.scores, self.row_score, self.limit = batch, row, limit
        # thresholds (in the user's units) with which no sample / every sample leaves
        self.stay_all, self.leave_all = stay_all, leave_all

    def __repr__(self):
        return 'Measure({!r}: exit when {})'.format(self.name, self.rule)


def _max_row(row):
    return 1.0 - max(_row_probabilities(row))


def _margin_row(row):
    p = sorted(_row_probabilities(row))
    return 1.0 - (p[-1] - p[-2])


def _max_batch(z):
    return 1.0 - _probabilities64(z).max(axis=1)


def _margin_batch(z):
    xp = chainer.backend.get_array_module(z)
    p = xp.sort(_probabilities64(z), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


MEASURES = {
    'entropy': Measure('entropy', 'entropy of the softmax < T (nats; the paper\'s rule)',
                       None, entropy_from_logits, entropy_from_logits_row, lambda t: t,
                       stay_all=0.0, leave_all=math.inf),
    'maxprob': Measure('maxprob', 'largest softmax probability > T (T in [0, 1])', 1.0,
                       _max_batch, _max_row, lambda t: 1.0 - t, stay_all=1.0,
                       leave_all=-math.inf),
    'margin': Measure('margin', 'largest minus second-largest probability > T '
                      '(T in [0, 1])', 1.0, _margin_batch, _margin_row, lambda t: 1.0 - t,
                      stay_all=1.0, leave_all=-math.inf),
}


def get_measure(name):
    """The Measure called ``name`` (entropy, maxprob or margin)."""
    if isinstance(name, Measure):
        return name
    if name not in MEASURES:
        raise InvalidValue('unknown confidence measure {!r}; expected one of: {}'.format(
            name, ', '.join(MEASURES)))
    return MEASURES[name]
