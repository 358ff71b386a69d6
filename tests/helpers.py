"""Builders shared by the tests (imported as ``tests.helpers``; fixtures stay in conftest)."""
import os

import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import FL, Branch, BranchyNet, entropy

#: the repository's root folder
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_engine_matches_predict(engine, net, x, seed=2):
    """``engine``'s labels and exits equal ``net.predict``'s for random
    thresholds within each exit's entropy range, at batch sizes 1, 5 and the
    default, and its main-network labels equal ``net.predict_main``'s."""
    ents = [entropy(sm) for sm in net.get_SM(x)][:-1]
    rng = numpy.random.RandomState(seed)
    for _ in range(3):
        ts = [float(rng.uniform(e.min(), e.max())) for e in ents]
        for bs in (1, 5, None):
            labels, exits = engine.predict(x, ts, batchsize=bs)
            exp_labels, exp_exits = net.predict(x, ts, batchsize=bs)
            numpy.testing.assert_array_equal(labels, exp_labels)
            numpy.testing.assert_array_equal(exits, exp_exits)
    numpy.testing.assert_array_equal(engine.predict_main(x), net.predict_main(x))


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
