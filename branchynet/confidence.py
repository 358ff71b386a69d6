"""Confidence of a softmax output, computed on numpy or cupy arrays alike."""
import chainer


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
