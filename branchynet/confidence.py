"""Confidence of a softmax output, computed on numpy or cupy arrays alike."""
import math

import chainer
import numpy


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
