"""Snapshots: interrupt-and-resume ends with the same weights; saves are atomic."""
import os
import signal

import numpy
import pytest

from branchynet import utils
from branchynet.io import fileio
from branchynet.training import checkpoint
from tests.helpers import make_three_exit_net


def _data():
    rng = numpy.random.RandomState(0)
    return (rng.randn(100, 1, 8, 8).astype(numpy.float32),
            rng.randint(0, 5, 100).astype(numpy.int32))


def _weights(net):
    return {k: p.array.copy() for k, p in net.namedparams()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        numpy.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _uninterrupted(main, epochs):
    x, y = _data()
    net = make_three_exit_net(seed=5)
    losses, _, _ = utils.train(net, x, y, main=main, batchsize=16, num_epoch=epochs, seed=3,
                               progress=False)
    return net, losses


@pytest.mark.parametrize('main', [True, False])
def test_sigint_mid_epoch_then_resume_equals_uninterrupted(tmp_path, main):
    x, y = _data()
    reference, ref_losses = _uninterrupted(main, 3)
    snap = str(tmp_path / 'run.snapshot.npz')
    net = make_three_exit_net(seed=5)
    step = net.train_main if main else net.train
    calls = {'n': 0}

    def step_then_signal(xb, yb):
        calls['n'] += 1
        if calls['n'] == 10:  # epoch 2 (7 batches an epoch), batch 3
            os.kill(os.getpid(), signal.SIGINT)
        return step(xb, yb)
    if main:
        net.train_main = step_then_signal
    else:
        net.train = step_then_signal
    with pytest.raises(checkpoint.TrainingInterrupted, match='snapshot saved'):
        utils.train(net, x, y, main=main, batchsize=16, num_epoch=3, seed=3, progress=False,
                    snapshot=snap)
    assert os.path.exists(snap)
    resumed = make_three_exit_net(seed=99)  # different start: everything comes from the snapshot
    losses, _, _ = utils.train(resumed, x, y, main=main, batchsize=16, num_epoch=3, seed=3,
                               progress=False, snapshot=snap, resume=True)
    _assert_same(_weights(resumed), _weights(reference))
    assert len(losses) == 3 and losses[0] == ref_losses[0]


def test_resume_from_an_epoch_end_snapshot(tmp_path):
    x, y = _data()
    reference, ref_losses = _uninterrupted(False, 3)
    snap = str(tmp_path / 's.npz')
    net = make_three_exit_net(seed=5)
    utils.train(net, x, y, batchsize=16, num_epoch=1, seed=3, progress=False, snapshot=snap)
    resumed = make_three_exit_net(seed=99)
    losses, _, _ = utils.train(resumed, x, y, batchsize=16, num_epoch=3, seed=3,
                               progress=False, snapshot=snap, resume=True)
    _assert_same(_weights(resumed), _weights(reference))
    assert losses == ref_losses


def test_a_momentum_sgd_run_resumes_like_an_uninterrupted_one(tmp_path):
    """SGD's momentum ``v`` is signed: it was refused as a negative Adam
    second moment, so no MomentumSGD snapshot could be resumed."""
    x, y = _data()
    reference = make_three_exit_net(seed=5, opt='MomentumSGD')
    ref_losses, _, _ = utils.train(reference, x, y, batchsize=16, num_epoch=2, seed=3,
                                   progress=False)
    snap = str(tmp_path / 's.npz')
    utils.train(make_three_exit_net(seed=5, opt='MomentumSGD'), x, y, batchsize=16,
                num_epoch=1, seed=3, progress=False, snapshot=snap)
    resumed = make_three_exit_net(seed=99, opt='MomentumSGD')
    losses, _, _ = utils.train(resumed, x, y, batchsize=16, num_epoch=2, seed=3,
                               progress=False, snapshot=snap, resume=True)
    _assert_same(_weights(resumed), _weights(reference))
    assert losses == ref_losses


def test_a_failed_snapshot_write_keeps_the_previous_one(tmp_path, monkeypatch):
    x, y = _data()
    snap = tmp_path / 's.npz'
    net = make_three_exit_net(seed=5)
    utils.train(net, x, y, batchsize=16, num_epoch=1, seed=3, progress=False, snapshot=str(snap))
    before = snap.read_bytes()

    def failing_replace(src, dst):
        raise OSError('no space left on device')
    monkeypatch.setattr(fileio.os, 'replace', failing_replace)
    with pytest.raises(OSError, match='no space'):
        utils.train(net, x, y, batchsize=16, num_epoch=2, seed=3, progress=False,
                    snapshot=str(snap), resume=True)
    assert snap.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['s.npz']


def test_a_foreign_file_is_not_taken_for_a_snapshot(tmp_path):
    path = tmp_path / 'x.npz'
    numpy.savez(path, a=numpy.zeros(3))
    with pytest.raises(ValueError, match='not a training snapshot'):
        checkpoint.load(str(path), make_three_exit_net(), numpy.random.RandomState(0))
