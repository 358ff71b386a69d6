"""The original's public names: same arguments, same meaning."""
import math

import chainer
import chainer.functions as F
import chainer.links as L
import matplotlib
import numpy
import pytest

from branchynet import FL, SL, Branch, BranchyNet, visualize
from tests.helpers import make_three_exit_net

matplotlib.use('Agg')


def test_sl_switches_between_train_and_test_layers():
    sl = SL(FL(F.relu), FL(lambda v: v * 2))
    x = numpy.array([[-1., 2.]], numpy.float32)
    with chainer.using_config('train', True):
        numpy.testing.assert_array_equal(chainer.as_array(sl(x)), [[0., 2.]])
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(chainer.as_array(sl(x)), [[-2., 4.]])
        numpy.testing.assert_array_equal(SL(FL(F.relu))(x), x)  # no fnTest: identity
    lin = L.Linear(2, 2)
    assert sorted(name for name, _ in SL(lin, L.Linear(2, 2)).namedparams()) == \
        ['/fnTest/W', '/fnTest/b', '/fnTrain/W', '/fnTrain/b']
    with pytest.raises(TypeError, match='fnTest'):
        SL(lin, 3)


def test_branch_weight_is_the_exit_loss_weight():
    def net(weight):
        numpy.random.seed(0)
        return BranchyNet([L.Linear(4, 6), Branch([L.Linear(6, 3)]), FL(F.relu),
                           Branch([L.Linear(6, 3)], weight=weight)])
    assert net(1.).exit_weights == [1.0, 1.0]  # the default: the original's training
    weighted = net(0.3)
    assert weighted.exit_weights == [1.0, 0.3]
    x = numpy.random.RandomState(0).randn(8, 4).astype(numpy.float32)
    t = numpy.arange(8, dtype=numpy.int32) % 3
    plain = net(1.)
    with chainer.using_config('train', True):
        l1 = plain._joint_losses(x, t)[0]
        l2 = weighted._joint_losses(x, t)[0]
    numpy.testing.assert_allclose([float(v.array) for v in l1], [float(v.array) for v in l2])
    with pytest.raises(ValueError, match='weight'):
        Branch([L.Linear(6, 3)], weight=-1)


def test_percent_train_keeps_list_is_a_share_of_the_batch(monkeypatch):
    net = make_three_exit_net(percentTrainKeeps=[0.5, 0.25])
    x = numpy.random.RandomState(0).randn(40, 1, 8, 8).astype(numpy.float32)
    t = numpy.arange(40, dtype=numpy.int32) % 5
    real = F.softmax_cross_entropy

    def samples_per_exit():
        seen = []

        def spy(z, tt, *a, **k):
            seen.append(len(tt))
            return real(z, tt, *a, **k)
        monkeypatch.setattr(F, 'softmax_cross_entropy', spy)
        with chainer.using_config('train', True):
            net._joint_losses(x, t)
        monkeypatch.setattr(F, 'softmax_cross_entropy', real)
        return seen
    assert samples_per_exit() == [40, 20, 10]  # shares of the batch of 40
    net.percentTrainKeeps = 0.25
    assert samples_per_exit() == [40, 10, 3]  # a number: a share of what reaches each exit
    with pytest.raises(ValueError, match='percentTrainKeeps'):
        net.percentTrainKeeps = [0.5]


def test_find_thresholds_let_the_chosen_share_leave():
    net = make_three_exit_net()
    x = numpy.random.RandomState(0).randn(50, 1, 8, 8).astype(numpy.float32)
    ts, ents = net.find_thresholds_entropies(x, None, percentTrainKeeps=0.6)
    assert len(ts) == 2 and [len(e) for e in ents] == [50, 50]
    for t, e in zip(ts, ents):
        assert (e < t).sum() == 20  # 40 % of the samples are below the threshold
    assert net.find_thresholds(x, None, 0.6) == ts


def test_original_figures_take_the_original_arguments(tmp_path):
    fig = visualize.plot_layers([0.5, 0.3, 0.2], save_name=str(tmp_path / 'loss'),
                                xlabel='Epochs', ylabel='Training Loss')
    assert (tmp_path / 'loss.png').exists() and len(fig.axes[0].lines) == 1
    fig = visualize.plot_layers(list(zip(*[[0.5, 0.6], [0.3, 0.4]])), xlabel='Epochs')
    assert [ln.get_label() for ln in fig.axes[0].lines] == ['Layer 0', 'Layer 1']
    accs, diffs = numpy.array([0.9, 0.95, 0.97]), numpy.array([1., 2., 3.])
    fig = visualize.plot_line_tradeoff(accs, diffs, [[1.], [2.], [3.]], [[1, 0]] * 3, 0.96, 2.5,
                                       knee_idx=1, all_samples=True,
                                       output_path=str(tmp_path / 'f.pdf'))
    assert (tmp_path / 'f.pdf').read_bytes().startswith(b'%PDF')
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert 'Our Method knee' in labels and 'Baseline' in labels
    visualize.plot_tradeoff([0.1, 0.2], accs[:2], diffs[:2], 96., 2.5)
    visualize.plot_roc([0.1, 0.2], accs[:2], diffs[:2], 0.96, 2.5)
    visualize.plot_exits([[1, 2], [3, 4]], accs[:2], [[2, 2], [1, 5]], accs[:2], i=1)
    visualize.plot_runtimes(diffs[:2], accs[:2], diffs[:2], accs[:2])
    net = make_three_exit_net()
    fig = visualize.plot_layer_entropy(net, numpy.zeros((5, 1, 8, 8), numpy.float32))
    assert len(fig.axes[0].lines) == 3


def test_entropy_gpu_and_mlp():
    from branchynet.functions import entropy_gpu
    from networks.mlp import MLP
    p = numpy.array([[0.5, 0.5, 0.], [1., 0., 0.]], numpy.float32)
    numpy.testing.assert_allclose(entropy_gpu(chainer.Variable(p)), [math.log(2), 0.],
                                  rtol=1e-6)
    assert MLP(4, 8, 3)(numpy.zeros((2, 4), numpy.float32)).shape == (2, 3)


def test_bottleneck_blocks():
    from branchynet.links import resnet
    x = numpy.random.RandomState(0).randn(2, 8, 8, 8).astype(numpy.float32)
    assert resnet.BottleNeckA(8, 4, 16, stride=2)(x).shape == (2, 16, 4, 4)
    assert resnet.BottleNeckB(8, 4)(x).shape == (2, 8, 8, 8)
    block = resnet.Block(3, 8, 4, 16)
    assert len(block) == 3 and block(x).shape == (2, 16, 4, 4)
    assert all(link.b is None for link in block.links() if isinstance(link, L.Convolution2D))
    assert resnet.ResBlock(8, 8)(x).shape == (2, 8, 8, 8)


def test_resnet_convolutions_use_the_original_scale():
    # Chainer 1.17 with wscale=sqrt(2): std = sqrt(wscale / fan_in)
    from networks import resnet_cifar10
    numpy.random.seed(0)
    block = resnet_cifar10.ResBlock(64, 64)
    w = block.conv1.W.array
    fan_in = w[0].size
    assert w.std() * math.sqrt(fan_in) == pytest.approx(2 ** 0.25, rel=0.02)
    head = resnet_cifar10.conv(64, 32, 3, 1, initialW=None)  # Chainer's default (LeCun)
    assert head.W.array.std() * math.sqrt(64 * 9) == pytest.approx(1.0, rel=0.05)
