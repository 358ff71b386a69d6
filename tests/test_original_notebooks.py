"""The original project's three experiment notebooks, cell by cell, against this port.

``experiment_lenet_mnist.ipynb``, ``experiment_alex_cifar10.ipynb`` and
``experiment_resnet_cifar10.ipynb`` (the last version of each; not the
open-set ones) transcribed to Python 3: ``print(...)``, ``list(zip(...))``,
``importlib.reload`` and the ``%matplotlib inline`` magic dropped; every
other call, argument and use of a result is theirs, the Table I cell
included (``utils.branchy_table_results(network, baseacc, basediff, accs,
diffs, exits, ts)``, with the GPU line's ``c_diffs`` as they wrote it). To
keep the tests short the data is random, of the datasets' shapes and small
(``mnist.get_data`` and ``pcifar10.get_data`` replaced), every training
phase is one epoch and, for B-ResNet-110, the threshold list is short. The
cells run in order in one namespace and none may fail; the AlexNet
notebook's last cell reads the LeNet notebook's results file, so the two
run in the same folder, LeNet first.
"""
import os
import traceback

import dill
import matplotlib
import numpy
import pytest

matplotlib.use('Agg')

LENET_THRESHOLDS = ('[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, '
                    '0.75, 1., 2., 3., 5., 10.]')
ALEX_THRESHOLDS = '[0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 0.75, 1., 5., 10.]'
RESNET_THRESHOLDS = '[0.5, 10.]'  # the notebook's is LeNet's 17 values (289 settings)


def notebook_cells(module, data, train_batchsize, thresholds, label, fig, model, name,
                   gpu_name, reload_utils=False, read_back=None):
    """The code cells of one of the original notebooks, in order."""
    table = ("print('CPU Results:')\n"
             "utils.branchy_table_results('{name}', c_baseacc, c_basediff, c_accs, c_diffs, "
             "c_exits, c_ts)\n\n"
             "print('\\n\\n')\n\n"
             "print('GPU Results:')\n"
             "utils.branchy_table_results('{gpu_name}', g_baseacc, g_basediff, g_accs, c_diffs, "
             "g_exits, g_ts)").format(name=name, gpu_name=gpu_name)
    if reload_utils:
        table = 'import importlib\nimportlib.reload(utils)\n' + table
    tradeoff = ("visualize.plot_line_tradeoff({p}_accs, {p}_diffs, {p}_ts, {p}_exits, "
                "{p}_baseacc, {p}_basediff, all_samples=False, inc_amt=-0.0001,\n"
                "                             our_label='Branchy{label}', orig_label='{label}', "
                "xlabel='Runtime (ms)',\n"
                "                             title='{label} {hw}', "
                "output_path='_figs/{fig}_{lhw}.pdf')")
    cells = [
        '# %load_ext autoreload\n# %autoreload 2\n# %matplotlib inline (a magic)',
        'from branchynet.net import BranchyNet\nfrom branchynet.links import *\n'
        'import chainer.functions as F\nimport chainer.links as L\n'
        'from branchynet import utils, visualize\nfrom chainer import cuda',
        'from networks import {m}\n\nbranchyNet = {m}.get_network()\nif cuda.available:\n'
        '    branchyNet.to_gpu()\nbranchyNet.training()'.format(m=module),
        data,
        'TRAIN_BATCHSIZE = {}\nTEST_BATCHSIZE = 1\nTRAIN_NUM_EPOCHS = 1'.format(train_batchsize),
        'main_loss, main_acc, main_time = utils.train(branchyNet, x_train, y_train, main=True, '
        'batchsize=TRAIN_BATCHSIZE,\n                                             '
        'num_epoch=TRAIN_NUM_EPOCHS)',
        'TRAIN_NUM_EPOCHS = 1\nbranch_loss, branch_acc, branch_time = utils.train(branchyNet, '
        'x_train, y_train, batchsize=TRAIN_BATCHSIZE,\n'
        '                                                   num_epoch=TRAIN_NUM_EPOCHS)\n\n'
        '#set network to inference mode\nbranchyNet.testing()',
        "visualize.plot_layers(main_loss, xlabel='Epochs', ylabel='Training Loss')\n"
        "visualize.plot_layers(main_acc, xlabel='Epochs', ylabel='Training Accuracy')",
        "visualize.plot_layers(list(zip(*branch_loss)), xlabel='Epochs', "
        "ylabel='Training Loss')\nvisualize.plot_layers(list(zip(*branch_acc)), "
        "xlabel='Epochs', ylabel='Training Accuracy')",
        '#set network to inference mode\nbranchyNet.testing()\nbranchyNet.verbose = False\n'
        'if cuda.available:\n    branchyNet.to_gpu()\n'
        'g_baseacc, g_basediff, _, _ = utils.test(branchyNet, x_test, y_test, main=True, '
        'batchsize=TEST_BATCHSIZE)\ng_basediff = (g_basediff / float(len(y_test))) * 1000.\n\n'
        '#branchyNet.to_cpu()\n'
        'c_baseacc, c_basediff, _, _ = utils.test(branchyNet, x_test, y_test, main=True, '
        'batchsize=TEST_BATCHSIZE)\nc_basediff = (c_basediff / float(len(y_test))) * 1000.',
        '# Specify thresholds\nthresholds = ' + thresholds,
        '#GPU\nif cuda.available:\n    branchyNet.to_gpu()\n'
        'g_ts, g_accs, g_diffs, g_exits = utils.screen_branchy(branchyNet, x_test, y_test, '
        'thresholds,\n                                                    '
        'batchsize=TEST_BATCHSIZE, verbose=True)\n\n#convert to ms\ng_diffs *= 1000.',
        tradeoff.format(p='g', label=label, hw='GPU', fig=fig, lhw='gpu'),
        '#CPU\nbranchyNet.to_cpu()\n'
        'c_ts, c_accs, c_diffs, c_exits  = utils.screen_branchy(branchyNet, x_test, y_test, '
        'thresholds,\n                                                       '
        'batchsize=TEST_BATCHSIZE, verbose=True)\n\n#convert to ms\nc_diffs *= 1000.',
        tradeoff.format(p='c', label=label, hw='CPU', fig=fig, lhw='cpu'),
        table,
        'import dill\nbranchyNet.to_cpu()\n'
        'with open("_models/{m}.bn", "wb") as f:\n    dill.dump(branchyNet, f)\n'
        'with open("_models/{m}_gpu_results.pkl", "wb") as f:\n'
        "    dill.dump({{'accs': g_accs, 'rt': g_diffs, 'exits': g_exits, 'ts': g_ts, "
        "'baseacc': g_baseacc, 'basediff': g_basediff}}, f)\n"
        'with open("_models/{m}_cpu_results.pkl", "wb") as f:\n'
        "    dill.dump({{'accs': c_accs, 'rt': c_diffs, 'exits': c_exits, 'ts': c_ts, "
        "'baseacc': c_baseacc, 'basediff': c_basediff}}, f)".format(m=model),
    ]
    if read_back:
        cells.append('import dill\nwith open("_models/{m}_gpu_results.pkl", "rb") as f:\n'
                     '    gpu_res = dill.load(f)\n'
                     'with open("_models/{m}_cpu_results.pkl", "rb") as f:\n'
                     '    cpu_res = dill.load(f)'.format(m=read_back))
    return cells


LENET = notebook_cells('lenet_mnist', 'from datasets import mnist\n'
                       'x_train, y_train, x_test, y_test = mnist.get_data()', 512,
                       LENET_THRESHOLDS, 'LeNet', 'lenet', 'lenet_mnist', 'LeNet', 'LeNet-MNIST',
                       read_back='lenet_mnist')
ALEX = notebook_cells('alex_cifar10', 'from datasets import pcifar10\n\n'
                      'x_train,y_train,x_test,y_test = pcifar10.get_data()', 512,
                      ALEX_THRESHOLDS, 'AlexNet', 'alexnet', 'alexnet_cifar10', 'AlexNet',
                      'AlexNet', reload_utils=True, read_back='lenet_mnist')
RESNET = notebook_cells('resnet_cifar10', 'from datasets import pcifar10\n\n'
                        'x_train,y_train,x_test,y_test = pcifar10.get_data()', 64,
                        RESNET_THRESHOLDS, 'ResNet', 'resnet', 'resnet_cifar10', 'ResNet',
                        'ResNet')


def run_cells(cells):
    """Run the cells in order in one namespace; returns it and the failures
    (cell number and traceback), every cell being run as a notebook would."""
    namespace, failures = {'__name__': '__main__'}, []
    for i, source in enumerate(cells):
        try:
            exec(compile(source, '<cell {}>'.format(i + 1), 'exec'), namespace)
        except Exception:
            failures.append((i + 1, traceback.format_exc()))
    return namespace, failures


@pytest.fixture
def tiny_data(monkeypatch, tmp_path):
    """A folder with _models and _figs; the datasets replaced by small random
    arrays of their shapes and types."""
    from datasets import mnist, pcifar10
    monkeypatch.chdir(tmp_path)
    os.mkdir('_models')
    os.mkdir('_figs')

    def fake(shape, n_train, n_test):
        def get_data(*args, **kwargs):
            rng = numpy.random.RandomState(0)
            return (rng.rand(n_train, *shape).astype(numpy.float32),
                    rng.randint(0, 10, n_train).astype(numpy.int32),
                    rng.rand(n_test, *shape).astype(numpy.float32),
                    rng.randint(0, 10, n_test).astype(numpy.int32))
        return get_data
    monkeypatch.setattr(mnist, 'get_data', fake((1, 28, 28), 600, 6))
    monkeypatch.setattr(pcifar10, 'get_data', fake((3, 32, 32), 64, 4))
    return tmp_path


def _check(namespace, failures, out, model, name, num_exits, num_settings):
    assert failures == [], '\n'.join('cell {}:\n{}'.format(i, tb) for i, tb in failures)
    net = namespace['branchyNet']
    assert net.numexits() == num_exits and net.xp is numpy
    ts, accs, diffs, exits = (namespace['c_' + k] for k in ('ts', 'accs', 'diffs', 'exits'))
    assert len(ts) == len(accs) == len(diffs) == len(exits) == num_settings
    for t, acc, ex in zip(ts, accs, exits):
        labels, got_exits = net.predict(namespace['x_test'], t)
        assert acc == pytest.approx((labels == namespace['y_test']).mean())
        assert list(ex) == numpy.bincount(got_exits, minlength=num_exits).tolist()
    lines = out.splitlines()
    start = lines.index('CPU Results:')
    assert lines[start + 1].split() == ['Network', 'Acc.(%)', 'Time(ms)', 'Gain', 'Thrshld.T',
                                        'Exit(%)']
    assert lines[start + 2].split()[0] == name
    assert sum(line.split()[:1] == ['B-' + name] for line in lines) >= num_settings
    assert 'GPU Results:' in lines
    for suffix in ('.bn', '_gpu_results.pkl', '_cpu_results.pkl'):
        assert os.path.getsize('_models/' + model + suffix) > 0
    with open('_models/{}_cpu_results.pkl'.format(model), 'rb') as f:
        numpy.testing.assert_allclose(dill.load(f)['rt'], diffs)


def test_lenet_and_alexnet_notebooks_run_cell_by_cell(tiny_data, capsys):
    namespace, failures = run_cells(LENET)
    _check(namespace, failures, capsys.readouterr().out, 'lenet_mnist', 'LeNet', 2, 17)
    assert sorted(namespace['cpu_res']) == ['accs', 'baseacc', 'basediff', 'exits', 'rt', 'ts']
    namespace, failures = run_cells(ALEX)
    _check(namespace, failures, capsys.readouterr().out, 'alexnet_cifar10', 'AlexNet', 3,
           11 ** 2)
    assert (tiny_data / '_figs' / 'alexnet_cpu.pdf').exists()


@pytest.mark.slow
def test_resnet_notebook_runs_cell_by_cell(tiny_data, capsys):
    namespace, failures = run_cells(RESNET)
    _check(namespace, failures, capsys.readouterr().out, 'resnet_cifar10', 'ResNet', 3, 4)
