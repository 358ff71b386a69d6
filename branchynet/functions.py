"""The original's ``functions.entropy_gpu``, for numpy and cupy alike."""
import chainer

from branchynet.measures.confidence import entropy


def entropy_gpu(x):
    """Entropy in nats of every row of a softmax output (a Variable or an
    array), with ``0 log 0 = 0``; the result stays on the input's device."""
    return entropy(x.array if isinstance(x, chainer.Variable) else x)
