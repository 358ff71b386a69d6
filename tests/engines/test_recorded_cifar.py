"""Every inference path answers as ``net.predict`` on the recorded CIFAR-10
networks (results/paper/*cifar10*: weights trained on the CIFAR-10 JPEG copy).

The inputs are random images at the scale of the preprocessed data (the tests
never read the JPEG copy); each early exit's threshold sits in the widest gap
between its scores near their median, so that every exit takes samples and no
float rounding in the last bits (which differs between engines) decides an exit.
"""
import glob
import os

import numpy
import pytest

from branchynet.engines.fast import FastBranchyNet
from branchynet.evaluation import screening
from branchynet.io import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDED = sorted(glob.glob(os.path.join(ROOT, 'results', 'paper', '*cifar10*', '*.npz')))


def _network(path):
    name = os.path.basename(path)[:-len('.npz')]
    module = __import__('networks.' + name, fromlist=['get_network'])
    net = module.get_network()
    fileio.load_npz(path, net)
    net.testing()
    return net


def _thresholds(net, x):
    scores, _ = screening.exit_outputs(net, x)
    ts = []
    for n in range(scores.shape[1] - 1):
        s = numpy.sort(scores[:, n])
        middle = numpy.arange(len(s) // 4, 3 * len(s) // 4)
        i = middle[numpy.argmax(s[middle + 1] - s[middle])]
        ts.append(float((s[i] + s[i + 1]) / 2))
    return ts


@pytest.mark.slow
@pytest.mark.parametrize('path', RECORDED, ids=[os.path.basename(os.path.dirname(p))
                                                 for p in RECORDED])
def test_every_engine_answers_as_predict(path):
    from branchynet.engines.numba import NumbaBranchyNet
    from branchynet.engines.onnx_runtime import OnnxBranchyNet
    net = _network(path)
    x = numpy.random.RandomState(0).randn(300, *net.input_shape).astype(numpy.float32)
    ts = _thresholds(net, x)
    labels, exits = net.predict(x, ts)
    assert len(set(exits.tolist())) == net.numexits()  # every exit takes samples
    for engine in (FastBranchyNet(net), NumbaBranchyNet(net), OnnxBranchyNet(net)):
        for batch in (1, 64):
            got = [engine.predict(x[i:i + batch], ts) for i in range(0, len(x), batch)]
            numpy.testing.assert_array_equal(numpy.concatenate([g[0] for g in got]), labels)
            numpy.testing.assert_array_equal(numpy.concatenate([g[1] for g in got]), exits)
