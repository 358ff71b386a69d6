"""BranchyNet link tree, joint training and early-exit semantics."""
import chainer
import numpy
import pytest

from branchynet import entropy
from tests.helpers import make_three_exit_net


def oracle(net, x, thresholds):
    """Fig. 2 applied sample by sample to the softmax of every exit (get_SM)."""
    sms = net.get_SM(x)
    ents = [entropy(sm) for sm in sms]
    labels, exits = [], []
    for i in range(len(x)):
        for n in range(net.numexits()):
            if n == net.numexits() - 1 or ents[n][i] < thresholds[n]:
                labels.append(int(sms[n][i].argmax()))
                exits.append(n)
                break
    return numpy.array(labels), numpy.array(exits)


def test_structure_of_the_link_tree(three_exit_net):
    net = three_exit_net
    assert net.numexits() == 3
    assert net.branch_points == [1, 4, 7]
    assert isinstance(net, chainer.Link)
    outs = net(numpy.zeros((2, 1, 8, 8), numpy.float32))
    assert [o.shape for o in outs] == [(2, 5)] * 3


def test_zero_threshold_sends_everything_to_last_exit(three_exit_net, small_batch):
    _, exits = three_exit_net.predict(small_batch[0], thresholds=0.0)
    assert (exits == 2).all()


def test_huge_threshold_sends_everything_out_of_exit_1(three_exit_net, small_batch):
    labels, exits = three_exit_net.predict(small_batch[0], thresholds=[1e9, 1e9])
    assert (exits == 0).all()
    numpy.testing.assert_array_equal(labels, three_exit_net.get_SM(small_batch[0])[0].argmax(1))


def test_random_thresholds_match_oracle_at_every_batch_size(three_exit_net, small_batch):
    net, x = three_exit_net, small_batch[0]
    ents = [entropy(sm) for sm in net.get_SM(x)]
    rng = numpy.random.RandomState(3)
    for _ in range(10):
        ts = [rng.uniform(numpy.percentile(e, 10), numpy.percentile(e, 90)) for e in ents[:2]]
        expected = oracle(net, x, ts + [None])
        for bs in (1, 7, None):
            labels, exits = net.predict(x, thresholds=ts, batchsize=bs)
            numpy.testing.assert_array_equal(labels, expected[0])
            numpy.testing.assert_array_equal(exits, expected[1])
        assert len(set(expected[1])) > 1  # the thresholds really split the batch


def test_exit_rule_is_strict(three_exit_net, small_batch):
    from branchynet.measures.confidence import entropy_from_logits, entropy_from_logits_row
    three_exit_net.testing()  # the logits routing sees (training kernels round differently)
    x = small_batch[0][:2]
    z0 = three_exit_net.forward(x)[0].array
    e0 = entropy_from_logits(z0)
    numpy.testing.assert_allclose(e0, entropy(three_exit_net.get_SM(x)[0]), rtol=1e-5)
    # threshold exactly equal to a sample's entropy: that sample must not exit.
    # Batched routing scores rows with entropy_from_logits...
    t = float(e0[0])
    _, exits = three_exit_net.predict(x, thresholds=[t, 0.0])
    assert exits[0] != 0 and (exits[1] == 0) == (e0[1] < t)
    _, exits = three_exit_net.predict(x, thresholds=[t * (1 + 1e-9), 0.0])
    assert exits[0] == 0
    # ...a single sample with the same formula in plain Python, from its own
    # batch-1 logits (BLAS may round a one-row product differently).
    t = entropy_from_logits_row(three_exit_net.forward(x[:1])[0].array[0].tolist())
    assert three_exit_net.predict(x[:1], thresholds=[t, 0.0])[1][0] != 0
    assert three_exit_net.predict(x[:1], thresholds=[t * (1 + 1e-9), 0.0])[1][0] == 0


def test_lenet_predict_agrees_with_oracle_and_batch_sizes():
    from networks import lenet_mnist
    net = lenet_mnist.get_network()
    x = numpy.random.RandomState(0).rand(40, 1, 28, 28).astype(numpy.float32)
    e = entropy(net.get_SM(x)[0])
    t = float(numpy.median(e))
    expected = oracle(net, x, [t, None])
    for bs in (1, 7, None):
        got = net.predict(x, t, batchsize=bs)
        numpy.testing.assert_array_equal(got[0], expected[0])
        numpy.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize('bad, match', [
    ([0.1], 'list of 2'),
    ([0.1, 0.2, 0.3], 'got 3 value'),
    (-0.5, 'negative'),
    ([0.1, float('nan')], 'NaN'),
    ('0.1', 'non-negative number'),
    ([0.1, 'a'], 'must be a number'),
    (None.__class__, 'non-negative number'),
])
def test_threshold_validation(three_exit_net, bad, match):
    with pytest.raises(ValueError, match=match):
        three_exit_net.thresholdExits = bad
    with pytest.raises(ValueError, match=match):
        three_exit_net.predict(numpy.zeros((1, 1, 8, 8), numpy.float32), thresholds=bad)


def test_thresholds_scalar_broadcasts(three_exit_net):
    three_exit_net.thresholdExits = 0.5
    assert three_exit_net.thresholdExits == [0.5, 0.5]
    three_exit_net.thresholdExits = numpy.array([0.1, 0.2])
    assert three_exit_net.thresholdExits == [0.1, 0.2]


def test_predict_without_thresholds_is_a_clear_error(three_exit_net):
    with pytest.raises(ValueError, match='no thresholds'):
        three_exit_net.predict(numpy.zeros((1, 1, 8, 8), numpy.float32))


def _params(link):
    return {name: p.array.copy() for name, p in link.namedparams()}


def test_trunk_receives_gradient_from_every_exit(small_batch):
    """Each exit's loss alone reaches the first trunk layer; jointly they add up."""
    x, t = small_batch
    net = make_three_exit_net()
    grads = []
    for n in range(3):
        net.exit_weights = [1.0 if k == n else 0.0 for k in range(3)]
        net.cleargrads()
        with chainer.using_config('train', True):
            losses, _ = net._joint_losses(x, t)
            sum(w * loss for w, loss in zip(net.exit_weights, losses)).backward()
        g = net.trunk[0].W.grad.copy()
        assert numpy.abs(g).sum() > 0, 'exit {} sends no gradient to the trunk'.format(n)
        grads.append(g)
    net.exit_weights = None
    net.cleargrads()
    with chainer.using_config('train', True):
        losses, _ = net._joint_losses(x, t)
        sum(losses).backward()
    numpy.testing.assert_allclose(net.trunk[0].W.grad, sum(grads), rtol=1e-4, atol=1e-6)


def test_joint_training_updates_every_part(small_batch):
    x, t = small_batch
    net = make_three_exit_net()
    before = _params(net)
    net.train(x, t)
    after = _params(net)
    assert all(not numpy.array_equal(before[k], after[k]) for k in before)


def test_main_training_leaves_branch_heads_untouched(small_batch):
    x, t = small_batch
    net = make_three_exit_net()
    before = _params(net)
    for _ in range(3):
        loss, acc = net.train_main(x, t)
    after = _params(net)
    changed = {k for k in before if not numpy.array_equal(before[k], after[k])}
    heads = {k for k in before if k.startswith('/branches/0/') or k.startswith('/branches/1/')}
    assert heads and not (changed & heads)
    assert changed == set(before) - heads
    # Adam's step counter of the heads did not move either
    assert all(p.update_rule.t == 0 for head in net.branches[:2] for p in head.params())


def test_joint_loss_decreases_with_training(small_batch):
    x, t = small_batch
    net = make_three_exit_net()
    first, _ = net.train(x, t)
    for _ in range(30):
        last, _ = net.train(x, t)
    assert sum(last) < sum(first)


def test_exit_weights_default_and_validation(three_exit_net):
    assert three_exit_net.exit_weights == [1.0, 1.0, 1.0]
    three_exit_net.exit_weights = [1.0, 1.0, 0.3]
    assert three_exit_net.exit_weights == [1.0, 1.0, 0.3]
    with pytest.raises(ValueError, match='3 non-negative numbers'):
        three_exit_net.exit_weights = [1.0, 0.3]


def test_percent_train_keeps_passes_on_the_least_confident(small_batch):
    x, t = small_batch
    net = make_three_exit_net(percentTrainKeeps=0.5)
    seen = []
    original = net.branches[1].forward

    def spy(h, *args):
        seen.append(len(h))
        return original(h, *args)
    net.branches[1].forward = spy
    net.train(x, t)
    assert seen == [30]
    with pytest.raises(ValueError, match='percentTrainKeeps'):
        net.percentTrainKeeps = 1.5


def test_test_reports_counts_and_per_exit_accuracy(three_exit_net, small_batch):
    x, t = small_batch
    acc, exit_accs, counts, seconds = three_exit_net.test(x, t, thresholds=[2.0, 1.0])
    labels, exits = three_exit_net.predict(x, thresholds=[2.0, 1.0])
    assert counts == numpy.bincount(exits, minlength=3).tolist()
    assert acc == pytest.approx((labels == t).mean())
    assert seconds > 0


def test_network_list_must_end_with_a_branch():
    import chainer.links as L
    from branchynet import BranchyNet
    with pytest.raises(ValueError, match='must end with a Branch'):
        BranchyNet([L.Linear(3, 2)])
    with pytest.raises(TypeError, match='chainer Links'):
        BranchyNet([lambda x: x])


# ------------------------------------------------------- shared head prefixes
def _naive_exit_logits(net, x):
    """Every exit's logits with each head run in full from its branch point."""
    outputs, h, start = [], x, 0
    for n, bp in enumerate(net.branch_points):
        h = net.trunk(h, start, bp)
        outputs.append(net.branches[n](h))
        start = bp
    return outputs


def test_heads_share_the_trunks_parameter_free_prefix():
    from networks import alex_cifar10, lenet_mnist, resnet_cifar10
    assert lenet_mnist.get_network().shared_prefix == [2, 0]      # pool, relu
    assert alex_cifar10.get_network().shared_prefix == [3, 1, 0]  # relu, pool, LRN; relu
    assert resnet_cifar10.get_network().shared_prefix == [0, 0, 0]
    assert make_three_exit_net().shared_prefix == [1, 1, 0]


def test_dropout_and_different_arguments_are_never_shared():
    import chainer.links as L
    from branchynet import FL, Branch, BranchyNet
    f = chainer.functions
    net = BranchyNet([L.Linear(4, 6), Branch([FL(f.dropout, 0.5), L.Linear(6, 3)]),
                      FL(f.dropout, 0.5), L.Linear(6, 6),
                      Branch([FL(f.leaky_relu, slope=0.1), L.Linear(6, 3)]),
                      FL(f.leaky_relu, slope=0.2), L.Linear(6, 3), Branch([FL(f.tanh)])])
    assert net.shared_prefix == [0, 0, 0]


def test_sharing_gives_the_outputs_and_gradients_of_full_heads(three_exit_net, small_batch):
    x, t = small_batch
    net = three_exit_net
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for got, want in zip(net._all_exit_logits(x), _naive_exit_logits(net, x)):
            numpy.testing.assert_array_equal(got.array, want.array)
    grads = []
    for logits in (net._all_exit_logits, lambda v: _naive_exit_logits(net, v)):
        net.cleargrads()
        sum(chainer.functions.softmax_cross_entropy(z, t) for z in logits(x)).backward()
        grads.append({name: p.grad.copy() for name, p in net.namedparams()})
    for name in grads[0]:
        numpy.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7)


def test_models_pickled_without_shared_prefix_still_load(small_batch):
    import pickle
    net = make_three_exit_net()
    state = net.__dict__.copy()
    state.pop('_shared_prefix', None)  # as pickled before the attribute existed
    old = pickle.loads(pickle.dumps(net))
    old.__dict__.clear()
    old.__dict__.update(pickle.loads(pickle.dumps(state)))
    assert old.shared_prefix == [1, 1, 0]
    numpy.testing.assert_array_equal(old.predict(small_batch[0], [0.5, 0.5])[1],
                                     net.predict(small_batch[0], [0.5, 0.5])[1])


def _dropout_bn_net():
    from branchynet import FL, Branch, BranchyNet
    import chainer.functions as F
    import chainer.links as L
    numpy.random.seed(0)
    return BranchyNet([L.Linear(6, 8), L.BatchNormalization(8), FL(F.dropout, 0.5),
                       Branch([L.Linear(8, 3)]), L.Linear(8, 8), Branch([L.Linear(8, 3)])])


@pytest.mark.parametrize('how', ['using_config', 'testing'])
def test_forward_test_mode_from_config_or_testing(how):
    """Both ``using_config('train', False)`` and ``testing()`` mean test mode:
    no dropout, batch normalisation statistics untouched."""
    net = _dropout_bn_net()
    x = numpy.random.RandomState(1).randn(16, 6).astype(numpy.float32)
    mean = net.trunk[1].avg_mean.copy()
    if how == 'testing':
        net.testing()
        outs = [net(x)[0].array for _ in range(2)]
    else:
        with chainer.using_config('train', False):
            outs = [net(x)[0].array for _ in range(2)]
    numpy.testing.assert_array_equal(outs[0], outs[1])
    numpy.testing.assert_array_equal(net.trunk[1].avg_mean, mean)
    net.training()
    train_outs = [net(x)[0].array for _ in range(2)]
    assert not numpy.array_equal(train_outs[0], train_outs[1])  # dropout is on again
    assert not numpy.array_equal(net.trunk[1].avg_mean, mean)


def test_exits_at_one_point_and_before_the_first_layer_predict():
    """Two exits with no trunk layer between them, and an exit before the
    first layer: empty trunk segments. ``predict`` failed on them with
    AttributeError ('numpy.ndarray' object has no attribute 'array')."""
    import chainer.functions as F
    import chainer.links as L
    from branchynet import FL, Branch, BranchyNet
    numpy.random.seed(1)
    net = BranchyNet([Branch([L.Linear(64, 5)]), L.Convolution2D(1, 4, 3, pad=1), FL(F.relu),
                      Branch([L.Linear(256, 5)]), Branch([L.Linear(256, 5)]),
                      FL(F.max_pooling_2d, 2), Branch([L.Linear(64, 5)])],
                     input_shape=(1, 8, 8))
    x = numpy.random.RandomState(0).randn(40, 1, 8, 8).astype(numpy.float32) * 3
    labels, exits = net.predict(x, thresholds=[0.5, 1.0, 1.5])
    assert len(labels) == len(exits) == 40 and set(exits.tolist()) <= {0, 1, 2, 3}
    for n in range(4):
        ts = [0.] * n + [float('inf')] + [0.] * (2 - n) if n < 3 else [0.] * 3
        labels, exits = net.predict(x, thresholds=ts[:3])
        assert (exits == n).all()
