"""Calls of the original that an earlier version of the port refused or
answered with another meaning: Table I in both forms, separate training
(``joint=False``), ``forwardMain``, the value for an exit with no samples,
``test(main=True)``, ``FL``'s attributes, ``ResBlock``'s keywords, the
CIFAR helpers, ``screen_branchy`` at any batch size, ``download_data.sh``."""
import os
import pickle
import subprocess

import chainer
import chainer.functions as F
import numpy
import pytest

from branchynet import FL, utils
from tests.helpers import make_three_exit_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=24, seed=0):
    rng = numpy.random.RandomState(seed)
    return (rng.randn(n, 1, 8, 8).astype(numpy.float32),
            rng.randint(0, 5, n).astype(numpy.int32))


# ------------------------------------------------------------------ Table I
def test_table_results_in_the_notebooks_form(capsys):
    exits = [numpy.array([7157, 2843]), numpy.array([10000, 0])]
    lines = utils.branchy_table_results('LeNet', 0.9907, 2.79, numpy.array([0.992, 0.9862]),
                                        numpy.array([1.01, 0.38]), exits, [[0.0001], [2.0]])
    out = capsys.readouterr().out.splitlines()
    assert out == lines and len(lines) == 4
    assert lines[0].split() == ['Network', 'Acc.(%)', 'Time(ms)', 'Gain', 'Thrshld.T',
                                'Exit(%)']
    assert lines[1].split() == ['LeNet', '99.07', '2.79', '-', '-', '-']
    assert lines[2].split() == ['B-LeNet', '99.20', '1.01', '{:.2f}'.format(2.79 / 1.01),
                                '{0.0001}', '{71.57,', '28.43}']
    assert lines[3].split()[-3:] == ['{2.0}', '{100.0,', '0.0}']
    assert all(len(line) == 90 for line in lines[:2])  # six columns of 15
    by_keyword = utils.branchy_table_results(network='LeNet', baseacc=0.9907, basediff=2.79,
                                             accs=[0.992], diffs=[1.01], exits=exits[:1],
                                             ts=[[0.0001]])
    assert by_keyword == lines[:3]


def test_table_results_in_the_scripts_form(capsys):
    lines = utils.branchy_table_results(0.9, 2.0, 1.0, [0.8, 0.85, 0.95], [0.5, 1.0, 1.5],
                                        [0.9], [0.5], inc_amt=0.1, network='LeNet')
    assert lines == ['Network,Hardware,Accuracy,Runtime,Speedup',
                     'LeNet,cpu,90.000,2.000,1.00', 'Branchy LeNet,cpu,80.000,0.500,4.00',
                     'Branchy LeNet,cpu,95.000,1.500,1.33',
                     'LeNet,gpu,90.000,1.000,1.00', 'Branchy LeNet,gpu,90.000,0.500,2.00']
    assert capsys.readouterr().out.splitlines() == lines
    assert utils.branchy_table_results(baseacc=0.9, c_basediff=2.0, g_basediff=1.0,
                                       c_accs=[0.8], c_diffs=[0.5], g_accs=[], g_diffs=[]) \
        == [lines[0], 'Orig,cpu,90.000,2.000,1.00', 'Branchy Orig,cpu,80.000,0.500,4.00',
            'Orig,gpu,90.000,1.000,1.00']
    with pytest.raises(ValueError, match='one entry per screened point'):
        utils.branchy_table_results('LeNet', 0.9, 2.0, [0.8], [0.5, 1.0], [[1, 1]], [[0.1]])


# ------------------------------------------------------- separate training
def _trunk_and_heads(net):
    trunk = {name: p.array.copy() for name, p in net.trunk.namedparams()}
    heads = {name: p.array.copy() for name, p in net.branches.namedparams()}
    return trunk, heads


def _changed(before, after):
    return sorted(name for name in before if not numpy.array_equal(before[name], after[name]))


def test_separate_training_keeps_early_heads_gradients_out_of_the_trunk():
    x, t = _data()
    for joint in (True, False):
        net = make_three_exit_net(joint=joint)
        net.cleargrads()
        with chainer.using_config('train', True):
            losses, _ = net._joint_losses(x, t)
        (losses[0] + losses[1]).backward()  # the early exits only
        trunk_grads = [p.grad for p in net.trunk.params()]
        head_grads = [p.grad for head in net.branches[:2] for p in head.params()]
        assert all(g is not None and numpy.abs(g).sum() > 0 for g in head_grads)
        reached = [g is not None and numpy.abs(g).sum() > 0 for g in trunk_grads]
        assert any(reached) == joint


def test_separate_training_trains_the_trunk_on_the_last_exit_alone():
    x, t = _data()
    for joint in (True, False):
        net = make_three_exit_net(joint=joint, exit_weights=[1., 1., 0.])
        before = _trunk_and_heads(net)
        net.train(x, t)
        trunk, heads = _trunk_and_heads(net)
        assert bool(_changed(before[0], trunk)) == joint  # the last exit weighs nothing
        assert {name.split('/')[1] for name in _changed(before[1], heads)} == {'0', '1'}
    net = make_three_exit_net(joint=False)
    before = _trunk_and_heads(net)
    net.train(x, t)
    assert _changed(before[0], _trunk_and_heads(net)[0]) == sorted(before[0])


def test_forward_main_trains_the_main_network_on_the_whole_batch():
    x, t = _data()
    net = make_three_exit_net(exit_weights=[0., 0., 0.])
    assert net.forwardMain is None
    before = _trunk_and_heads(net)
    net.train(x, t)
    assert _changed(before[0], _trunk_and_heads(net)[0]) == []  # no loss weighs anything
    net.forwardMain = True
    losses, accs = net.train(x, t)
    trunk, heads = _trunk_and_heads(net)
    assert _changed(before[0], trunk) == sorted(before[0])
    assert {name.split('/')[1] for name in _changed(before[1], heads)} == {'2'}
    assert len(losses) == len(accs) == 3


# ---------------------------------------------------------------- evaluation
def test_an_exit_with_no_samples_has_accuracy_zero_as_the_original():
    x, t = _data()
    net = make_three_exit_net()
    acc, exit_accs, counts, _ = net.test(x, t, thresholds=[0., 0.])  # entropy is never < 0
    assert counts == [0, 0, len(x)] and exit_accs[:2] == [0., 0.]
    assert exit_accs[2] == pytest.approx(acc)
    _, _, counts, accs = utils.test(net, x, t, thresholds=[0., 0.])
    assert accs[:2].tolist() == [0., 0.]


def test_test_of_the_main_network_returns_zeros_per_exit_as_the_original():
    x, t = _data()
    net = make_three_exit_net()
    acc, seconds, counts, accs = utils.test(net, x, t, main=True)
    assert acc == pytest.approx((net.predict_main(x) == t).mean()) and seconds > 0
    assert counts.tolist() == [0, 0, 0] and accs.tolist() == [0., 0., 0.]


def test_screen_branchy_at_any_batch_size():
    x, t = _data(30)
    net = make_three_exit_net()
    one = utils.screen_branchy(net, x, t, [0.5, 10.], progress=False)
    many = utils.screen_branchy(net, x, t, [0.5, 10.], batchsize=7, progress=False)
    assert many[0] == one[0]
    numpy.testing.assert_allclose(many[1], one[1])
    assert [e.tolist() for e in many[3]] == [e.tolist() for e in one[3]]
    assert numpy.all(many[2] > 0)
    with pytest.raises(ValueError, match='batchsize'):
        utils.screen_branchy(net, x, t, [0.5], batchsize=0)


# ------------------------------------------------------------------- names
def test_fl_keeps_the_original_attribute_names():
    fl = FL(F.max_pooling_2d, 3, stride=2)
    assert fl.arguments == (3,) and fl.keywords == {'stride': 2}
    assert fl.args == (3,) and fl.kwargs == {'stride': 2}
    bound = fl.bound_arguments()
    assert bound['ksize'] == 3 and bound['stride'] == 2 and bound['pad'] == 0
    x = numpy.random.RandomState(0).randn(1, 1, 7, 7).astype(numpy.float32)
    numpy.testing.assert_array_equal(fl(x).array, F.max_pooling_2d(x, 3, stride=2).array)
    # a layer pickled when it held ``args``/``kwargs`` loads with the new names
    old = FL.__new__(FL)
    old.__setstate__({**{k: v for k, v in fl.__dict__.items()
                         if k not in ('arguments', 'keywords')},
                      'args': (3,), 'kwargs': {'stride': 2}})
    assert old.arguments == (3,) and old.keywords == {'stride': 2}
    again = pickle.loads(pickle.dumps(fl))
    assert again.arguments == (3,) and again.keywords == {'stride': 2}


def test_resblock_takes_the_original_keywords():
    from networks.resnet_cifar10 import ResBlock
    block = ResBlock(in_size=4, out_size=8, stride=2, ksize=1)
    assert (block.in_size, block.out_size) == (4, 8) == (block.in_channels, block.out_channels)
    x = numpy.random.RandomState(0).randn(2, 4, 6, 6).astype(numpy.float32)
    assert block(x).shape == (2, 8, 3, 3)


@pytest.mark.parametrize('module', ['cifar10gcn', 'cifar100gcn'])
def test_gcn_modules_have_the_original_helpers(module, tmp_path):
    import importlib
    mod = importlib.import_module('datasets.' + module)
    batch = {b'data': numpy.arange(2 * 3072, dtype=numpy.uint8).reshape(2, 3072) % 251,
             b'fine_labels': [3, 7], b'labels': [3, 7], b'batch_label': b'test'}
    with open(tmp_path / 'batch', 'wb') as f:
        pickle.dump(batch, f, protocol=2)
    got = mod.unpickle(str(tmp_path / 'batch'))
    assert sorted(got) == ['batch_label', 'data', 'fine_labels', 'labels']
    numpy.testing.assert_array_equal(got['data'], batch[b'data'])
    data = numpy.random.RandomState(0).randn(400, 6)
    components, mean, whitened = mod.preprocessing(data)
    numpy.testing.assert_allclose(mean, data.mean(axis=0))
    numpy.testing.assert_allclose(numpy.cov(whitened.T, bias=True), numpy.eye(6), atol=1e-8)


def test_download_data_script_refuses_arguments():
    result = subprocess.run(['bash', os.path.join(ROOT, 'download_data.sh'), '--all'],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == 'download_data.sh takes no arguments, got: --all'
