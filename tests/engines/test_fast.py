"""The compiled fast path gives the same outputs, labels and exits as Chainer."""
import chainer
import numpy
import pytest

from branchynet.engines.fast import FastBranchyNet
from networks import alex_cifar10, lenet_mnist, resnet_cifar10
from tests.helpers import assert_engine_matches_predict, make_three_exit_net


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


def _engine(kind, net):
    if kind.startswith('onnx'):
        onnxpath = pytest.importorskip('branchynet.engines.onnx_runtime')
        pytest.importorskip('onnxruntime')
        return onnxpath.OnnxBranchyNet(net, form='graph' if kind == 'onnx-graph'
                                       else 'sessions')
    return FastBranchyNet(net)


@pytest.mark.parametrize('kind', ['fast', 'onnx', 'onnx-graph'])
def test_predictions_and_exits_identical_to_predict(net_and_data, kind):
    net, x = net_and_data
    assert_engine_matches_predict(_engine(kind, net), net, x)


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


# ------------------------------------------------------------ compiled layers
def _chainer(fn, x):
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return fn(x).array


@pytest.mark.parametrize('stride,pad,ksize', [(1, 0, 3), (1, 3, 5), (2, 1, 3), (2, 2, 5),
                                              (3, 0, 2)])
@pytest.mark.parametrize('batch', [1, 3])
def test_compiled_convolution_matches_chainer(stride, pad, ksize, batch):
    import chainer.links as L
    from branchynet.engines.fast import Compiler
    numpy.random.seed(0)
    conv = L.Convolution2D(3, 4, ksize, stride=stride, pad=pad)
    bn = L.BatchNormalization(4)
    rng = numpy.random.RandomState(1)
    bn.avg_mean[:] = rng.randn(4)
    bn.avg_var[:] = rng.rand(4) + 0.5
    x = rng.randn(batch, 3, 11, 9).astype(numpy.float32)
    compiler = Compiler(numpy)
    for fused, expect in ((compiler.conv(conv), _chainer(conv, x)),
                          (compiler.conv(conv, bn=bn, relu=True),
                           numpy.maximum(_chainer(lambda v: bn(conv(v)), x), 0))):
        numpy.testing.assert_allclose(fused(x), expect, rtol=1e-4, atol=1e-5)
        # a strided (non-contiguous) input and a second call on the same buffers
        xt = numpy.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
        numpy.testing.assert_allclose(fused(xt), expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('ksize,stride,pad,cover_all', [
    (2, 2, 0, True), (2, 2, 0, False), (3, 2, 0, True), (3, 2, 1, True), (2, 3, 0, True),
    (3, 1, 1, False)])
def test_compiled_max_pooling_matches_chainer(ksize, stride, pad, cover_all):
    import chainer.functions as F
    from branchynet import FL
    from branchynet.engines.fast import Compiler
    x = numpy.random.RandomState(0).randn(2, 3, 11, 15).astype(numpy.float32)
    layer = FL(F.max_pooling_2d, ksize, stride, pad=pad, cover_all=cover_all)
    expect = _chainer(layer, x)
    compiler = Compiler(numpy)
    numpy.testing.assert_array_equal(compiler.function(layer)(x), expect)
    numpy.testing.assert_array_equal(compiler.function(layer, relu=True)(x),
                                     numpy.maximum(expect, 0))


@pytest.mark.parametrize('ksize,stride,pad', [(2, 2, 0), (3, 1, 1), (6, 1, 0)])
def test_compiled_average_pooling_matches_chainer(ksize, stride, pad):
    import chainer.functions as F
    from branchynet import FL
    from branchynet.engines.fast import Compiler
    x = numpy.random.RandomState(0).randn(2, 3, 8, 8).astype(numpy.float32)
    layer = FL(F.average_pooling_2d, ksize, stride, pad=pad)
    numpy.testing.assert_allclose(Compiler(numpy).function(layer)(x), _chainer(layer, x),
                                  rtol=1e-5, atol=1e-6)


def test_sequences_fuse_relu_without_touching_their_input():
    import chainer.functions as F
    import chainer.links as L
    from branchynet import FL, Net
    from branchynet.engines.fast import Compiler
    numpy.random.seed(0)
    layers = [FL(F.relu), FL(F.max_pooling_2d, 2, 2), L.Convolution2D(2, 3, 3, pad=1),
              FL(F.relu), L.Linear(3 * 4 * 4, 5), FL(F.relu)]
    x = numpy.random.RandomState(0).randn(2, 2, 8, 8).astype(numpy.float32)
    before = x.copy()
    got = Compiler(numpy).sequence(layers)(x)
    numpy.testing.assert_allclose(got, _chainer(Net(layers), x), rtol=1e-5, atol=1e-6)
    numpy.testing.assert_array_equal(x, before)


def test_plan_cache_keeps_few_small_shapes(monkeypatch):
    from branchynet.engines import fast as fastpath
    built = []
    plans = fastpath._Plans(lambda shape: (built.append(shape) or shape, shape[0]))
    for n in (1, 2, 3, 4, 5, 1):
        plans.get((n,))
    assert built == [(1,), (2,), (3,), (4,), (5,), (1,)]  # (1,) was evicted by (5,)
    assert list(plans.local.plans) == [(3,), (4,), (5,), (1,)]
    monkeypatch.setattr(fastpath, 'CACHE_BYTES', 2)
    plans.get((7,))
    plans.get((7,))
    assert built[-2:] == [(7,), (7,)] and (7,) not in plans.local.plans


def test_grouped_convolution_runs_through_chainer_with_bn_and_relu():
    import chainer.functions as F
    import chainer.links as L
    from branchynet import FL, Net
    from branchynet.engines.fast import Compiler
    numpy.random.seed(0)
    layers = [L.Convolution2D(4, 6, 3, pad=1, groups=2), L.BatchNormalization(6), FL(F.relu)]
    layers[1].avg_mean[:] = numpy.random.RandomState(1).randn(6)
    x = numpy.random.RandomState(0).randn(2, 4, 5, 5).astype(numpy.float32)
    numpy.testing.assert_allclose(Compiler(numpy).sequence(layers)(x), _chainer(Net(layers), x),
                                  rtol=1e-5, atol=1e-6)
