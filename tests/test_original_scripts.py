"""The original project's three experiment scripts, run against this port.

Each test makes the calls of the original's ``experiment_<network>.py`` in the
same order, with the same positional and keyword arguments and the same
handling of what they return (``diffs *= 1000.`` on a numpy array of seconds,
``zip(*branch_loss)``, dill dumps of the model after ``to_cpu()`` and of the
results dicts). Only the Python 3 spelling differs (``list(zip(...))``,
binary file modes), and, to keep the tests short, the data is a small subset,
every training phase one epoch and the threshold list short. The CIFAR-10
scripts load ``pcifar10``, which cannot be had here: its ``get_data`` is
replaced by random arrays of CIFAR's shape.
"""
import os

import dill
import matplotlib
import numpy
import pytest

matplotlib.use('Agg')

# The scripts' own imports, as they wrote them.
from branchynet.net import BranchyNet  # noqa: E402,F401
from branchynet.links import *  # noqa: E402,F401,F403
import chainer.functions as F  # noqa: E402,F401
import chainer.links as L  # noqa: E402,F401
from branchynet import utils, visualize  # noqa: E402
from chainer import cuda  # noqa: E402


def _run_script(network_module, data_module, names, thresholds, train_batchsize,
                n_train, n_test):
    """The body of the original scripts; returns what they computed."""
    branchyNet = network_module.get_network()
    if cuda.available:
        branchyNet.to_gpu()
    branchyNet.training()

    x_train, y_train, x_test, y_test = data_module.get_data()
    x_train, y_train = x_train[:n_train], y_train[:n_train]  # the subset
    x_test, y_test = x_test[:n_test], y_test[:n_test]

    TRAIN_BATCHSIZE = train_batchsize
    TEST_BATCHSIZE = 1
    TRAIN_NUM_EPOCHS = 1

    main_loss, main_acc, main_time = utils.train(branchyNet, x_train, y_train, main=True,
                                                 batchsize=TRAIN_BATCHSIZE,
                                                 num_epoch=TRAIN_NUM_EPOCHS)
    TRAIN_NUM_EPOCHS = 1
    branch_loss, branch_acc, branch_time = utils.train(branchyNet, x_train, y_train,
                                                       batchsize=TRAIN_BATCHSIZE,
                                                       num_epoch=TRAIN_NUM_EPOCHS)
    branchyNet.testing()

    visualize.plot_layers(main_loss, xlabel='Epochs', ylabel='Training Loss')
    visualize.plot_layers(main_acc, xlabel='Epochs', ylabel='Training Accuracy')
    visualize.plot_layers(list(zip(*branch_loss)), xlabel='Epochs', ylabel='Training Loss')
    visualize.plot_layers(list(zip(*branch_acc)), xlabel='Epochs', ylabel='Training Accuracy')

    branchyNet.testing()
    branchyNet.verbose = False
    if cuda.available:
        branchyNet.to_gpu()
    g_baseacc, g_basediff, _, _ = utils.test(branchyNet, x_test, y_test, main=True,
                                             batchsize=TEST_BATCHSIZE)
    g_basediff = (g_basediff / float(len(y_test))) * 1000.
    c_baseacc, c_basediff, _, _ = utils.test(branchyNet, x_test, y_test, main=True,
                                             batchsize=TEST_BATCHSIZE)
    c_basediff = (c_basediff / float(len(y_test))) * 1000.

    if cuda.available:
        branchyNet.to_gpu()
    g_ts, g_accs, g_diffs, g_exits = utils.screen_branchy(branchyNet, x_test, y_test,
                                                          thresholds, batchsize=TEST_BATCHSIZE,
                                                          verbose=True)
    g_diffs *= 1000.
    visualize.plot_line_tradeoff(g_accs, g_diffs, g_ts, g_exits, g_baseacc, g_basediff,
                                 all_samples=False, inc_amt=-0.0001000,
                                 our_label='Branchy' + names['label'],
                                 orig_label=names['label'], xlabel='Runtime (ms)',
                                 title=names['label'] + ' GPU',
                                 output_path='_figs/{}_gpu.pdf'.format(names['fig']))

    branchyNet.to_cpu()
    c_ts, c_accs, c_diffs, c_exits = utils.screen_branchy(branchyNet, x_test, y_test,
                                                          thresholds, batchsize=TEST_BATCHSIZE,
                                                          verbose=True)
    seconds = numpy.array(c_diffs, copy=True)
    c_diffs *= 1000.
    visualize.plot_line_tradeoff(c_accs, c_diffs, c_ts, c_exits, c_baseacc, c_basediff,
                                 all_samples=False, inc_amt=-0.0001000,
                                 our_label='Branchy' + names['label'],
                                 orig_label=names['label'], xlabel='Runtime (ms)',
                                 title=names['label'] + ' CPU',
                                 output_path='_figs/{}_cpu.pdf'.format(names['fig']))

    utils.branchy_table_results(c_baseacc, c_basediff, g_basediff, c_accs, c_diffs, g_accs,
                                g_diffs, inc_amt=0.000, network=names['label'])

    branchyNet.to_cpu()
    with open('_models/{}.bn'.format(names['model']), 'wb') as f:
        dill.dump(branchyNet, f)
    with open('_models/{}_gpu_results.pkl'.format(names['model']), 'wb') as f:
        dill.dump({'accs': g_accs, 'rt': g_diffs, 'exits': g_exits, 'ts': g_ts,
                   'baseacc': g_baseacc, 'basediff': g_basediff}, f)
    with open('_models/{}_cpu_results.pkl'.format(names['model']), 'wb') as f:
        dill.dump({'accs': c_accs, 'rt': c_diffs, 'exits': c_exits, 'ts': c_ts,
                   'baseacc': c_baseacc, 'basediff': c_basediff}, f)
    return dict(net=branchyNet, main_loss=main_loss, main_acc=main_acc, main_time=main_time,
                branch_loss=branch_loss, branch_acc=branch_acc, branch_time=branch_time,
                c_baseacc=c_baseacc, c_basediff=c_basediff, seconds=seconds,
                c=(c_ts, c_accs, c_diffs, c_exits), x_test=x_test, y_test=y_test)


def _check(result, names, capsys, num_exits, thresholds, max_seconds=None):
    """What the scripts relied on, checked on what they produced."""
    out = capsys.readouterr().out
    net = result['net']
    assert net.numexits() == num_exits
    # train: one value per epoch; main-only gives one number, joint one per exit.
    assert len(result['main_loss']) == 1 and numpy.ndim(result['main_loss'][0]) == 0
    assert numpy.shape(result['branch_loss']) == (1, num_exits)
    assert numpy.shape(result['branch_acc']) == (1, num_exits)
    assert result['main_time'] > 0 and result['branch_time'] > 0
    # test(main=True): overall fraction correct and total seconds.
    labels = net.predict_main(result['x_test'])
    assert result['c_baseacc'] == pytest.approx((labels == result['y_test']).mean())
    assert result['c_basediff'] > 0
    # screen_branchy: the product of the list over the early exits, diffs in seconds.
    ts, accs, diffs, exits = result['c']
    assert len(ts) == len(thresholds) ** (num_exits - 1)
    assert all(len(t) == num_exits - 1 for t in ts)
    assert isinstance(diffs, numpy.ndarray) and isinstance(accs, numpy.ndarray)
    assert numpy.all(result['seconds'] > 0)
    if max_seconds:  # B-LeNet takes about 1.5 ms a sample here: seconds, not ms
        assert numpy.all(result['seconds'] < max_seconds)
    numpy.testing.assert_allclose(diffs, 1000. * result['seconds'])
    for t, acc, ex in zip(ts, accs, exits):
        got, got_exits = net.predict(result['x_test'], t)
        assert acc == pytest.approx((got == result['y_test']).mean())
        assert list(ex) == numpy.bincount(got_exits, minlength=num_exits).tolist()
    # figures, Table I lines, and the dill files.
    for device in ('gpu', 'cpu'):
        assert os.path.getsize('_figs/{}_{}.pdf'.format(names['fig'], device)) > 0
    assert 'Network,Hardware,Accuracy,Runtime,Speedup' in out
    assert '{},cpu,'.format(names['label']) in out and '{},gpu,'.format(names['label']) in out
    with open('_models/{}.bn'.format(names['model']), 'rb') as f:
        loaded = dill.load(f)
    assert loaded.xp is numpy
    x = result['x_test'][:4]
    numpy.testing.assert_array_equal(loaded.predict(x, ts[0])[0], net.predict(x, ts[0])[0])
    with open('_models/{}_cpu_results.pkl'.format(names['model']), 'rb') as f:
        saved = dill.load(f)
    assert sorted(saved) == ['accs', 'baseacc', 'basediff', 'exits', 'rt', 'ts']
    numpy.testing.assert_allclose(saved['rt'], result['c'][2])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir('_models')
    os.mkdir('_figs')
    return tmp_path


def _fake_cifar(monkeypatch, n_train, n_test):
    """pcifar10.get_data replaced by random data of CIFAR-10's shape and types."""
    from datasets import pcifar10
    rng = numpy.random.RandomState(0)

    def get_data(redir=''):
        return (rng.randn(n_train, 3, 32, 32).astype(numpy.float32),
                rng.randint(0, 10, n_train).astype(numpy.int32),
                rng.randn(n_test, 3, 32, 32).astype(numpy.float32),
                rng.randint(0, 10, n_test).astype(numpy.int32))
    monkeypatch.setattr(pcifar10, 'get_data', get_data)
    return pcifar10


def test_experiment_lenet_mnist_runs_unmodified(workdir, capsys):
    from datasets import mnist
    from networks import lenet_mnist
    thresholds = [0.0001, 0.05, 1., 10.]
    names = {'label': 'LeNet', 'fig': 'lenet', 'model': 'lenet_mnist'}
    result = _run_script(lenet_mnist, mnist, names, thresholds, 512, 2048, 40)
    _check(result, names, capsys, 2, thresholds, max_seconds=0.5)


def test_experiment_alex_cifar10_runs_unmodified(workdir, capsys, monkeypatch):
    from networks import alex_cifar10
    thresholds = [0.0001, 0.5, 10.]
    names = {'label': 'AlexNet', 'fig': 'alexnet', 'model': 'alexnet_cifar10'}
    result = _run_script(alex_cifar10, _fake_cifar(monkeypatch, 128, 12), names, thresholds,
                         512, 128, 12)
    _check(result, names, capsys, 3, thresholds)


@pytest.mark.slow
def test_experiment_resnet_cifar10_runs_unmodified(workdir, capsys, monkeypatch):
    from networks import resnet_cifar10
    thresholds = [0.5, 10.]
    names = {'label': 'ResNet', 'fig': 'resnet', 'model': 'resnet_cifar10'}
    result = _run_script(resnet_cifar10, _fake_cifar(monkeypatch, 32, 3), names, thresholds,
                         64, 32, 3)
    _check(result, names, capsys, 3, thresholds)


def test_bn_file_is_written_from_the_cpu(tmp_path, monkeypatch):
    """A model on a GPU is dumped from the CPU and put back on its device.

    No GPU here: the device is mocked, and the moves are recorded on the
    model (the dumped copy must carry the CPU state)."""
    from branchynet.io import fileio
    from tests.helpers import make_three_exit_net
    net = make_three_exit_net()
    gpu = type('FakeGpuDevice', (), {'xp': object()})()
    moves = []

    def to_cpu(self):
        moves.append('cpu')
        self.where = 'cpu'
        return self

    def to_device(self, device):
        moves.append(device)
        self.where = 'gpu'
        return self
    monkeypatch.setattr(BranchyNet, 'device', property(lambda self: gpu))
    monkeypatch.setattr(BranchyNet, 'to_cpu', to_cpu)
    monkeypatch.setattr(BranchyNet, 'to_device', to_device)
    net.where = 'gpu'
    fileio.save_dill(str(tmp_path / 'm.bn'), net)
    monkeypatch.undo()
    assert moves == ['cpu', gpu] and net.where == 'gpu'
    loaded = fileio.load_dill(str(tmp_path / 'm.bn'), trust=True)
    assert loaded.where == 'cpu' and loaded.xp is numpy
