"""Tiny trained-looking networks for the placement tests (no early exits)."""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import FL, Branch, BranchyNet

SHAPE = (1, 8, 8)
CLASSES = 4


def data(n=96, seed=0):
    """Images whose class is the quadrant holding a bright blob: learnable in seconds."""
    rng = numpy.random.RandomState(seed)
    y = rng.randint(0, CLASSES, n).astype(numpy.int32)
    x = rng.randn(n, *SHAPE).astype(numpy.float32) * 0.3
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * col:4 * col + 4] += 1.5
    return x, y


def layers(seed=0):
    numpy.random.seed(seed)
    return [L.Convolution2D(1, 4, 3, pad=1), L.BatchNormalization(4), FL(F.relu),
            L.Convolution2D(4, 6, 3, pad=1), FL(F.relu), FL(F.max_pooling_2d, 2, 2),
            L.Convolution2D(6, 8, 3, pad=1), FL(F.relu),
            L.Linear(8 * 4 * 4, 16), FL(F.relu), L.Linear(16, CLASSES)]


def with_statistics(links, seed=1):
    """Random batch-normalisation statistics, so test mode differs from training mode."""
    rng = numpy.random.RandomState(seed)
    for link in links:
        if isinstance(link, L.BatchNormalization):
            link.avg_mean[:] = rng.randn(*link.avg_mean.shape).astype(numpy.float32) * 0.1
            link.avg_var[:] = rng.uniform(0.5, 2, link.avg_var.shape).astype(numpy.float32)
    return links


def sequential(seed=0):
    return chainer.Sequential(*with_statistics(layers(seed)))


def one_exit_net(seed=0):
    links = with_statistics(layers(seed))
    return BranchyNet(links[:-1] + [Branch([links[-1]])], input_shape=SHAPE)
