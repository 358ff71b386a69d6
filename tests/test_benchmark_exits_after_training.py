"""benchmarks/exits_after_training.py: the main network's weights and the hand placement."""
import numpy
import pytest

import chainer

from tests.helpers import benchmark_module


@pytest.fixture(scope='module')
def bench():
    with benchmark_module('exits_after_training') as module:
        yield module


def _weights(net):
    return {name: p.array.copy() for name, p in net.namedparams()}


def test_weights_load_from_a_training_snapshot_or_a_saved_npz(bench, tmp_path):
    import networks.lenet_mnist as lenet
    from branchynet.io import fileio
    trained = lenet.get_network()
    for p in trained.params():
        p.array[...] = numpy.random.RandomState(1).randn(*p.shape)
    snapshot = str(tmp_path / 'main.snapshot.npz')
    serializer = chainer.serializers.DictionarySerializer(path='model/')
    serializer.save(trained)  # a snapshot's layout: the model under model/, more beside it
    numpy.savez(snapshot, epoch=numpy.int64(4), **{'optimizer/t': numpy.int64(9)},
                **serializer.target)
    saved = str(tmp_path / 'weights.npz')
    fileio.save_npz(saved, trained)
    want = _weights(trained)
    for path in (snapshot, saved):
        got = _weights(bench.load_main_weights(path, lenet.get_network()))
        assert got.keys() == want.keys()
        assert all(numpy.array_equal(got[k], want[k]) for k in want)


def test_the_hand_placement_is_the_networks_own_branch_points_and_heads(bench):
    import networks.lenet_mnist as lenet
    heads, points = bench.hand_heads(lenet)
    net = lenet.get_network()
    assert points == net.branch_points[:-1] == [1]
    assert [type(h).__name__ for h in heads[0]] == [type(h).__name__ for h in net.branches[0]]
