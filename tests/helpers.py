"""Builders shared by the tests (imported as ``tests.helpers``; fixtures stay in conftest)."""
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import FL, Branch, BranchyNet


def make_three_exit_net(seed=0, **kwargs):
    """A small 3-exit convolutional BranchyNet on 1x8x8 inputs."""
    numpy.random.seed(seed)
    network = [
        L.Convolution2D(1, 4, 3, pad=1),
        Branch([FL(F.relu), L.Linear(4 * 8 * 8, 5)]),
        FL(F.relu), L.Convolution2D(4, 6, 3, pad=1), FL(F.max_pooling_2d, 2, 2),
        Branch([FL(F.relu), L.Linear(6 * 4 * 4, 5)]),
        FL(F.relu), L.Linear(6 * 4 * 4, 16), FL(F.relu),
        Branch([L.Linear(16, 5)]),
    ]
    return BranchyNet(network, input_shape=(1, 8, 8), **kwargs)
