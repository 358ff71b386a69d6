import os
import sys

import numpy
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import branchynet  # noqa: E402,F401
import chainer.functions as F  # noqa: E402
import chainer.links as L  # noqa: E402

from branchynet import FL, Branch, BranchyNet  # noqa: E402


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


@pytest.fixture
def three_exit_net():
    return make_three_exit_net()


@pytest.fixture
def small_batch():
    rng = numpy.random.RandomState(1)
    x = rng.randn(60, 1, 8, 8).astype(numpy.float32)
    t = rng.randint(0, 5, 60).astype(numpy.int32)
    return x, t


@pytest.fixture(scope='session')
def mnist_data():
    from datasets import mnist
    return mnist.get_data()


def pytest_configure(config):
    # The allocator setting the driver uses (branchynet.runtime): faster training steps.
    from branchynet import runtime
    runtime.tune_allocator()
