"""The compiled fast path gives the same outputs, labels and exits as Chainer."""
import chainer
import numpy
import pytest

from branchynet import entropy
from branchynet.fastpath import FastBranchyNet
from networks import alex_cifar10, lenet_mnist, resnet_cifar10
from tests.conftest import make_three_exit_net


def _trained(module, shape, steps=2, batch=16):
    numpy.random.seed(0)
    net = module.get_network()
    rng = numpy.random.RandomState(0)
    for _ in range(steps):  # moves BN statistics away from their initial values
        net.train(rng.rand(batch, *shape).astype(numpy.float32),
                  rng.randint(0, 10, batch).astype(numpy.int32))
    return net


@pytest.fixture(scope='module', params=['lenet', 'alexnet', 'resnet'])
def net_and_data(request):
    module, shape = {'lenet': (lenet_mnist, (1, 28, 28)),
                     'alexnet': (alex_cifar10, (3, 32, 32)),
                     'resnet': (resnet_cifar10, (3, 32, 32))}[request.param]
    net = _trained(module, shape, steps=2 if request.param != 'resnet' else 1, batch=8)
    n = 8 if request.param == 'resnet' else 24  # ResNet-110: ~0.1 s a sample at batch 1
    x = numpy.random.RandomState(1).rand(n, *shape).astype(numpy.float32)
    return net, x


def test_every_exit_head_matches_chainer(net_and_data):
    net, x = net_and_data
    fast = FastBranchyNet(net)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        expected = [z.array for z in net._all_exit_logits(x)]
    h = x
    for n in range(net.numexits()):
        h = fast.segments[n](h)
        numpy.testing.assert_allclose(fast.heads[n](h), expected[n], rtol=1e-4, atol=1e-4)


def test_predictions_and_exits_identical_to_predict(net_and_data):
    net, x = net_and_data
    fast = FastBranchyNet(net)
    ents = [entropy(sm) for sm in net.get_SM(x)][:-1]
    rng = numpy.random.RandomState(2)
    for _ in range(3):
        ts = [float(rng.uniform(e.min(), e.max())) for e in ents]
        for bs in (1, 5, None):
            labels, exits = fast.predict(x, ts, batchsize=bs)
            exp_labels, exp_exits = net.predict(x, ts, batchsize=bs)
            numpy.testing.assert_array_equal(labels, exp_labels)
            numpy.testing.assert_array_equal(exits, exp_exits)
    numpy.testing.assert_array_equal(fast.predict_main(x), net.predict_main(x))


def test_unknown_links_fall_back_to_chainer():
    import chainer.links as L
    from branchynet import FL, Branch, BranchyNet
    net = BranchyNet([L.Linear(4, 6), Branch([L.Linear(6, 3)]),
                      FL(lambda v: v * 2), L.Linear(6, 3), Branch([FL(chainer.functions.tanh)])],
                     input_shape=(4,))
    x = numpy.random.RandomState(0).randn(10, 4).astype(numpy.float32)
    fast = FastBranchyNet(net)
    for t in (0.0, 0.8, 5.0):
        numpy.testing.assert_array_equal(fast.predict(x, t)[1], net.predict(x, t)[1])


def test_small_three_exit_net(small_batch):
    net = make_three_exit_net()
    x = small_batch[0]
    fast = FastBranchyNet(net)
    for ts in ([0.0, 0.0], [1.58, 1.6], [9.0, 9.0]):
        numpy.testing.assert_array_equal(fast.predict(x, ts)[1], net.predict(x, ts)[1])
