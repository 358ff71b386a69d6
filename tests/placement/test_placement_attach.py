"""Exits attached to a trained network: only the heads train, the trunk stays bit for bit."""
import chainer
import numpy
import pytest

from branchynet.engines.fast import FastBranchyNet
from branchynet.placement import Trunk, attach_exits
from branchynet.validation import InputError
from tests.helpers import assert_engine_matches_predict
from tests.placement.placement_nets import SHAPE, data, one_exit_net, sequential


def _params(link):
    return {name: p.array.copy() for name, p in link.namedparams()}


def _persistents(links):
    return [numpy.array(getattr(link, name)) for link in links for name in
            sorted(getattr(link, '_persistent', ()))]


def _final_logits(net, x):
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return net.branches[-1](net.trunk(x)).array


@pytest.mark.parametrize('source', ['branchynet', 'sequential'])
def test_heads_only_training_keeps_the_trunk_and_final_exit_bit_for_bit(source):
    x, y = data()
    original = one_exit_net() if source == 'branchynet' else sequential()
    before = _params(original)
    stats = _persistents(original.links())
    if source == 'branchynet':
        reference = _final_logits(original, x)
        net = attach_exits(original, [3, 6], x, y, epochs=2, batchsize=32)
    else:
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            reference = original(x).array
        net = attach_exits(original, [3, 6], x, y, input_shape=SHAPE, epochs=2, batchsize=32)
    assert net.numexits() == 3 and net.branch_points == [3, 6, 10]
    # the network given is untouched, parameters and statistics alike
    after = _params(original)
    assert before.keys() == after.keys()
    for k in before:
        numpy.testing.assert_array_equal(before[k], after[k])
    for a, b in zip(stats, _persistents(original.links())):
        numpy.testing.assert_array_equal(a, b)
    # the new network's final exit gives the same logits, bit for bit
    numpy.testing.assert_array_equal(net.get_logits(x)[-1], reference)
    numpy.testing.assert_array_equal(_final_logits(net, x), reference)
    trunk_params = [p.array for p in net.trunk.params()]
    orig_trunk = Trunk.of(original, SHAPE)
    orig_params = [p.array for link in orig_trunk.layers for p in link.params()]
    assert len(trunk_params) == len(orig_params)
    for a, b in zip(trunk_params, orig_params):
        numpy.testing.assert_array_equal(a, b)
    # the heads learnt something (the task is easy)
    hist = net.placement_history
    assert hist['cached'] and hist['loss'][-1][0] < hist['loss'][0][0]


def test_streamed_training_equals_cached():
    x, y = data(64)
    cached = attach_exits(one_exit_net(), [3], x, y, epochs=1, batchsize=16, seed=3)
    streamed = attach_exits(one_exit_net(), [3], x, y, epochs=1, batchsize=16, seed=3,
                            cache_bytes=0)
    assert not streamed.placement_history['cached']
    for a, b in zip(cached.branches[0].params(), streamed.branches[0].params()):
        numpy.testing.assert_array_equal(a.array, b.array)


def test_attached_network_is_an_ordinary_branchynet():
    x, y = data()
    net = attach_exits(one_exit_net(), [3, 8], x, y, epochs=2, batchsize=32)
    result = net.calibrate(x[:48], y[:48], cost_samples=8, progress=False)
    assert len(result['thresholds']) == 2
    labels, exits = net.predict(x)
    assert labels.shape == exits.shape == (len(x),)
    assert_engine_matches_predict(FastBranchyNet(net), net, x[:20])


def test_finetuning_trains_the_trunk_too():
    x, y = data(64)
    original = one_exit_net()
    net = attach_exits(original, [3], x, y, epochs=1, batchsize=32, finetune_epochs=1)
    trunk = Trunk.of(original)
    changed = [not numpy.array_equal(a.array, b.array) for a, b in zip(
        net.trunk.params(), (p for link in trunk.layers for p in link.params()))]
    assert any(changed)


@pytest.mark.parametrize('call, words', [
    (lambda x, y: attach_exits(one_exit_net(), [0], x, y), 'boundaries'),
    (lambda x, y: attach_exits(one_exit_net(), [20], x, y), 'boundaries'),
    (lambda x, y: attach_exits(sequential(), [3], x, y), 'input_shape'),
    (lambda x, y: attach_exits('net', [3], x, y), 'must be a trained BranchyNet'),
    (lambda x, y: attach_exits(one_exit_net(), [3], x, y, heads='big'), 'heads must be'),
    (lambda x, y: attach_exits(one_exit_net(), [3], x, y % 4 + 7), 'labels must lie'),
    (lambda x, y: attach_exits(one_exit_net(), [3], x[:, :, :4], y), 'shape'),
])
def test_bad_input_gets_one_clear_line(call, words):
    x, y = data(16)
    with pytest.raises(InputError) as e:
        call(x, y)
    assert words in str(e.value) and '\n' not in str(e.value)


def test_a_network_with_early_exits_is_refused_unless_asked():
    from tests.helpers import make_three_exit_net
    net = make_three_exit_net()
    with pytest.raises(InputError, match='drop_early_exits=True'):
        Trunk.of(net)
    assert len(Trunk.of(net, drop_early_exits=True).layers) == len(net.trunk)
