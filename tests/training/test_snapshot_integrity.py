"""Snapshots belong to one run, cover every batch of an interrupted epoch,
exist from the first epoch on, and training stops on a non-finite loss."""
import os
import signal

import numpy
import pytest

from branchynet import utils
from branchynet.training import checkpoint
from branchynet.net import NonFiniteLoss
from branchynet.io.safenpz import ModelFileError
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net


def _data(n=100, seed=0):
    rng = numpy.random.RandomState(seed)
    return (rng.randn(n, 1, 8, 8).astype(numpy.float32),
            rng.randint(0, 5, n).astype(numpy.int32))


def _weights(net):
    return {k: p.array.copy() for k, p in net.namedparams()}


def _interrupt_at(net, main, call):
    """Make the ``call``-th training step send SIGINT to this process."""
    step = net.train_main if main else net.train
    calls = {'n': 0}

    def step_then_signal(xb, yb):
        calls['n'] += 1
        if calls['n'] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return step(xb, yb)
    setattr(net, 'train_main' if main else 'train', step_then_signal)


def _train(net, snap=None, resume=False, main=False, epochs=3, seed=3, data=None, **kw):
    x, y = data or _data()
    return utils.train_exits(net, x, y, main=main, batchsize=16, num_epoch=epochs, seed=seed,
                       progress=False, snapshot=snap, resume=resume, **kw)


@pytest.mark.parametrize('main', [True, False])
@pytest.mark.parametrize('call', [3, 10])  # epoch 1 batch 3; epoch 2 batch 3 (7 batches/epoch)
def test_resumed_epoch_records_all_its_batches(tmp_path, main, call, capsys):
    ref_losses, ref_accs, _ = _train(make_three_exit_net(seed=5), main=main)
    snap = str(tmp_path / 's.npz')
    net = make_three_exit_net(seed=5)
    _interrupt_at(net, main, call)
    with pytest.raises(checkpoint.TrainingInterrupted) as info:
        _train(net, snap, main=main)
    assert info.value.path == snap and os.path.exists(snap)
    losses, accs, _ = _train(make_three_exit_net(seed=9), snap, resume=True, main=main)
    assert losses == ref_losses and accs == ref_accs
    epoch = 1 if call == 3 else 2
    assert 'resuming {} training from epoch {}, batch 4'.format(
        'main' if main else 'joint', epoch) in capsys.readouterr().err


def test_augmented_first_epoch_interrupt_leaves_the_snapshot_it_names(tmp_path):
    x = numpy.random.RandomState(0).rand(40, 3, 32, 32).astype(numpy.float32)
    y = numpy.random.RandomState(1).randint(0, 10, 40).astype(numpy.int32)
    from networks import alex_cifar10
    net = alex_cifar10.get_network()
    _interrupt_at(net, True, 1)
    snap = str(tmp_path / 'aug.npz')
    with pytest.raises(checkpoint.TrainingInterrupted, match='start of epoch 1') as info:
        utils.train_exits(net, x, y, main=True, batchsize=16, num_epoch=2, seed=0, progress=False,
                    augment=True, snapshot=snap)
    assert os.path.exists(info.value.path)
    resumed = alex_cifar10.get_network()
    losses, _, _ = utils.train_exits(resumed, x, y, main=True, batchsize=16, num_epoch=2, seed=0,
                               progress=False, augment=True, snapshot=snap, resume=True)
    assert len(losses) == 2


@pytest.mark.parametrize('change, setting', [
    ({'seed': 7}, 'seed'),
    ({'data': _data(seed=1)}, 'data'),
    ({'data': tuple(a[:90] for a in _data())}, 'data'),
    ({'settings': {'network': 'other'}}, 'network'),
    ({'main': True}, 'phase'),
])
def test_a_snapshot_of_another_run_is_refused_naming_the_setting(tmp_path, change, setting):
    snap = str(tmp_path / 's.npz')
    _train(make_three_exit_net(seed=5), snap, epochs=1, settings={'network': 'mine'})
    kwargs = dict({'settings': {'network': 'mine'}}, **change)
    net = make_three_exit_net(seed=9)
    before = _weights(net)
    with pytest.raises(InputError, match=r'other settings \({}: the snapshot has'.format(
            setting)):
        _train(net, snap, resume=True, epochs=2, **kwargs)
    after = _weights(net)
    assert all((before[k] == after[k]).all() for k in before)


def test_a_snapshot_of_other_network_code_is_refused_naming_both_files(tmp_path):
    """The driver records a function network's source file and its hash: the
    same code at another path resumes, other code is refused naming both."""
    snap = str(tmp_path / 's.npz')
    mine = {'file': '/home/me/mynet.py', 'sha256': 'ab' * 32}
    _train(make_three_exit_net(seed=5), snap, epochs=1,
           settings={'network': 'small_net', 'network_source': mine})
    moved = dict(mine, file='/elsewhere/mynet.py')
    losses, _, _ = _train(make_three_exit_net(seed=5), snap, resume=True, epochs=1,
                          settings={'network': 'small_net', 'network_source': moved})
    assert len(losses) == 1
    other = {'file': '/home/me/other.py', 'sha256': 'cd' * 32}
    with pytest.raises(InputError, match=r'network_source: the snapshot has /home/me/mynet.py '
                                         r'\(sha256 abababababababab\), this run '
                                         r'/home/me/other.py \(sha256 cdcdcdcdcdcdcdcd\)'):
        _train(make_three_exit_net(seed=5), snap, resume=True, epochs=2,
               settings={'network': 'small_net', 'network_source': other})


def test_batch_size_is_part_of_the_settings(tmp_path):
    snap = str(tmp_path / 's.npz')
    x, y = _data()
    utils.train_exits(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                snapshot=snap)
    with pytest.raises(InputError, match='batchsize: the snapshot has 16, this run 32'):
        utils.train_exits(make_three_exit_net(), x, y, batchsize=32, num_epoch=2, progress=False,
                    snapshot=snap, resume=True)


def test_a_snapshot_past_the_runs_end_or_truncated_is_refused(tmp_path):
    snap = tmp_path / 's.npz'
    _train(make_three_exit_net(), str(snap), epochs=3)
    with pytest.raises(ModelFileError, match='at epoch 3 of a 2-epoch run'):
        _train(make_three_exit_net(), str(snap), resume=True, epochs=2)
    data = snap.read_bytes()
    snap.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(ModelFileError, match='s.npz'):
        _train(make_three_exit_net(), str(snap), resume=True, epochs=4)


def test_an_empty_snapshot_curve_round_trips(tmp_path):
    net = make_three_exit_net()
    rng = numpy.random.RandomState(0)
    checkpoint.save(str(tmp_path / 's.npz'), net, rng, 0, [], [], order=numpy.arange(100),
                    next_batch=2, sums=(numpy.ones(3), numpy.ones(3), 32))
    at = checkpoint.load(str(tmp_path / 's.npz'), make_three_exit_net(), rng,
                         n_samples=100, batchsize=16)
    assert at.epoch == 0 and at.losses == [] and at.next_batch == 2 and at.sums[2] == 32


@pytest.mark.parametrize('main', [True, False])
def test_a_non_finite_loss_stops_training_and_keeps_weights_and_snapshot(tmp_path, main):
    snap = tmp_path / 's.npz'
    x, y = _data()
    saved = {}

    def corrupt_after_first_epoch(epoch, losses, accs):
        saved['snapshot'] = snap.read_bytes()
        saved['weights'] = _weights(net)
        x[20:40] = 3e38  # finite, but overflows in the first layer
    net = make_three_exit_net(seed=5)
    with pytest.raises(NonFiniteLoss, match='the training loss is nan'):
        _train(net, str(snap), epochs=3, main=main, data=(x, y),
               on_epoch_end=corrupt_after_first_epoch)
    assert snap.read_bytes() == saved['snapshot']
    assert all(numpy.isfinite(v).all() for v in _weights(net).values())
    resumed_from = make_three_exit_net(seed=9)
    checkpoint.load(str(snap), resumed_from, numpy.random.RandomState(0))
    for k, v in _weights(resumed_from).items():
        numpy.testing.assert_array_equal(v, saved['weights'][k])
