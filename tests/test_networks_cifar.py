"""B-AlexNet and B-ResNet-110: shapes, parameter counts, depth, BN, training."""
import chainer
import chainer.links as L
import numpy
import pytest

from networks import alex_cifar10, resnet_cifar10


def _batch(n, seed=0):
    rng = numpy.random.RandomState(seed)
    return (rng.randn(n, 3, 32, 32).astype(numpy.float32),
            rng.randint(0, 10, n).astype(numpy.int32))


@pytest.fixture(scope='module')
def alexnet():
    return alex_cifar10.get_network()


@pytest.fixture(scope='module')
def resnet():
    return resnet_cifar10.get_network()


def test_alexnet_exit_shapes_and_parameter_count(alexnet):
    assert [z.shape for z in alexnet(_batch(2)[0])] == [(2, 10)] * 3
    # conv weights are in*out*k*k + out biases; linear in*out + out.
    # trunk: conv 3-32 k5 2432, conv 32-64 k5 51264, conv 64-96 k3 55392,
    #        conv 96-96 83040, conv 96-64 55360, fc 1024-256 262400, fc 256-128 32896
    #        -> 542784; final fc 128-10 1290 -> main network 544074
    # exit 1 head: conv 64-32 18464, conv 32-32 9248, fc 512-10 5130 -> 32842
    # exit 2 head: conv 96-32 27680, fc 128-10 1290 -> 28970
    # total 544074 + 32842 + 28970 = 605886
    assert alexnet.count_params() == 605886
    main = sum(link.count_params() for link in alexnet.main_links())
    assert main == 544074


def test_resnet_exit_shapes_and_parameter_count(resnet):
    assert [z.shape for z in resnet(_batch(2)[0])] == [(2, 10)] * 3
    # ResBlock(c,c): 2 convs 9c^2+c, 2 BNs 2c -> 18c^2+6c (c=16: 4704, 32: 18624,
    # 64: 74112); ResBlock(16,32) 14016; ResBlock(32,64) 55680.
    # main: stem conv 448 + BN 32, 18*4704, 14016 + 17*18624, 55680 + 17*74112,
    #       fc 576-10 5770 -> 1737130
    # exit 1 head: conv 16-64 k5 25664, conv 64-32 18464, conv 32-32 9248,
    #       fc 28800-10 288010 -> 341386
    # exit 2 head: ResBlock(16,16) 4704 + fc 14400-10 144010 -> 148714
    assert resnet.count_params() == 1737130 + 341386 + 148714
    assert sum(link.count_params() for link in resnet.main_links()) == 1737130


def _count(links, kind):
    return sum(1 for link in links for sub in link.links() if isinstance(sub, kind))


def test_resnet_main_path_has_109_convolutions_and_one_linear(resnet):
    assert _count(resnet.main_links(), L.Convolution2D) == 109
    assert _count(resnet.main_links(), L.Linear) == 1
    before_exit2 = resnet.trunk[:resnet.branch_points[1]]
    assert _count(before_exit2, L.Convolution2D) == 37


def test_resnet_convolutions_have_the_original_scale_and_bias(resnet):
    # wscale=sqrt(2) under Chainer 1.17: std sqrt(wscale / fan_in), not He's sqrt(2 / fan_in)
    w = resnet.trunk[5].conv1.W.array  # a 16->16 3x3 convolution: fan-in 144
    assert w.std() == pytest.approx(numpy.sqrt(numpy.sqrt(2.) / 144), rel=0.05)
    assert resnet.trunk[5].conv1.b is not None


def test_resnet_shortcut_zero_pads_channels_and_subsamples():
    block = resnet_cifar10.ResBlock(16, 32, stride=2)
    x = numpy.random.RandomState(0).randn(2, 16, 30, 30).astype(numpy.float32)
    with chainer.using_config('train', False):
        assert block(x).shape == (2, 32, 15, 15)


@pytest.mark.parametrize('module, steps, batch', [(alex_cifar10, 15, 32),
                                                  (resnet_cifar10, 4, 8)])
def test_a_few_steps_lower_the_joint_loss(module, steps, batch):
    numpy.random.seed(0)
    net = module.get_network()
    x, t = _batch(batch, seed=1)
    first, _ = net.train(x, t)
    for _ in range(steps):
        last, _ = net.train(x, t)
    assert sum(last) < sum(first)


def test_batchnorm_updates_in_training_only_once_per_step():
    """Running mean after one step from zero: (1 - decay) * batch mean if the
    stem's BN ran once per joint step (twice would give 0.19 * batch mean)."""
    numpy.random.seed(0)
    net = resnet_cifar10.get_network()
    bn = net.trunk[1]
    x, t = _batch(4)
    with chainer.no_backprop_mode():
        h = net.trunk[0](x).array
    assert not bn.avg_mean.any()
    net.train(x, t)
    numpy.testing.assert_allclose(bn.avg_mean, (1 - bn.decay) * h.mean(axis=(0, 2, 3)),
                                  rtol=1e-4, atol=1e-6)
    mean1, var1 = bn.avg_mean.copy(), bn.avg_var.copy()
    net.predict(x, thresholds=[0.5, 0.5])
    net.get_SM(x)
    net.test(x, t, thresholds=[0.5, 0.5])
    numpy.testing.assert_array_equal(bn.avg_mean, mean1)
    numpy.testing.assert_array_equal(bn.avg_var, var1)


def test_batchnorm_statistics_survive_npz_round_trip(tmp_path):
    from branchynet.io import fileio
    net = resnet_cifar10.get_network()
    net.train(*_batch(4))
    fileio.save_npz(tmp_path / 'r.npz', net)
    fresh = fileio.load_npz(tmp_path / 'r.npz', resnet_cifar10.get_network())
    numpy.testing.assert_array_equal(fresh.trunk[1].avg_var, net.trunk[1].avg_var)
    numpy.testing.assert_array_equal(fresh.trunk[40].bn2.avg_mean, net.trunk[40].bn2.avg_mean)
