"""Damaged or forged training snapshots are refused before anything uses them,
and training never writes a model with non-finite weights."""
import subprocess
import sys
import textwrap

import numpy
import pytest

from branchynet import utils
from branchynet.training import checkpoint
from branchynet.io.safenpz import ModelFileError
from tests.helpers import make_three_exit_net

from tests.helpers import ROOT  # noqa: E402


def _data(n=40, seed=0):
    rng = numpy.random.RandomState(seed)
    return (rng.randn(n, 1, 8, 8).astype(numpy.float32),
            rng.randint(0, 5, n).astype(numpy.int32))


def _snapshot(path, interrupted=True):
    """A real snapshot of joint training, inside epoch 2 when ``interrupted``."""
    x, y = _data()
    net = make_three_exit_net(seed=5)
    utils.train_exits(net, x, y, batchsize=8, num_epoch=1, seed=3, progress=False,
                      snapshot=str(path))
    if interrupted:
        with numpy.load(str(path)) as z:
            arrays = {k: z[k] for k in z.files}
        arrays['order'] = numpy.random.RandomState(0).permutation(len(x)).astype(numpy.int64)
        arrays['next_batch'] = numpy.array(2)
        arrays['sums/loss'] = numpy.ones(3)
        arrays['sums/acc'] = numpy.ones(3) / 2
        arrays['sums/samples'] = numpy.array(16)
        numpy.savez(str(path), **arrays)
    return x, y


def _forge(path, **changes):
    with numpy.load(str(path)) as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in changes.items():
        key = key.replace('__', '/')
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    numpy.savez(str(path), **arrays)


def _resume(path, data, epochs=2):
    x, y = data
    return utils.train_exits(make_three_exit_net(seed=9), x, y, batchsize=8, num_epoch=epochs,
                             seed=3, progress=False, snapshot=str(path), resume=True)


def test_an_intact_forged_position_still_resumes(tmp_path):
    """The base of the cases below: the unchanged snapshot is accepted."""
    snap = tmp_path / 's.npz'
    data = _snapshot(snap)
    losses, _, _ = _resume(snap, data)
    assert len(losses) == 2


@pytest.mark.parametrize('changes, match', [
    ({'rng__pos': numpy.array(10 ** 9)}, 'rng/pos'),
    ({'global_rng__pos': numpy.array(-1)}, 'global_rng/pos'),
    ({'rng__keys': numpy.arange(5, dtype=numpy.uint32)}, 'rng/keys'),
    ({'global_rng__keys': numpy.zeros(624)}, 'global_rng/keys'),
    ({'rng__has_gauss': numpy.array(7)}, 'rng/has_gauss'),
    ({'rng__cached': numpy.array(numpy.nan)}, 'rng/cached'),
    ({'rng__keys': None}, 'rng/keys'),
    ({'order': numpy.arange(40, dtype=numpy.float64)}, 'order'),
    ({'order': numpy.arange(40).reshape(2, 20)}, 'order'),
    ({'order': numpy.zeros(40, dtype=numpy.int64)}, 'permutation'),
    ({'sums__loss': numpy.ones(2)}, 'sums'),
    ({'sums__loss': numpy.array([1., numpy.inf, 1.])}, 'sums'),
    ({'sums__samples': numpy.array(-5)}, 'sums/samples'),
    ({'optimizer__t': numpy.array(-3)}, 'optimizer/t'),
    ({'optimizer__trunk__0__W__t': numpy.array(-1)}, 'optimizer/trunk/0/W/t'),
    ({'optimizer__trunk__0__W__v': -numpy.ones((4, 1, 3, 3), numpy.float32)},
     'optimizer/trunk/0/W/v'),
    ({'losses': numpy.array([[numpy.inf, 1., 1.]])}, 'curves'),
    ({'accs': numpy.array([[2., 1., 1.]])}, 'curves'),
    ({'losses': numpy.ones((1, 2)), 'accs': numpy.ones((1, 2))}, 'curves'),
    # Adam's moments of another shape or dtype: refused naming the parameter, not a
    # broadcast error at the first update
    ({'optimizer__trunk__0__W__m': numpy.zeros(3, numpy.float32)},
     r"'optimizer/trunk/0/W/m' is float32 \(3,\), but parameter trunk/0/W is float32 "
     r"\(4, 1, 3, 3\)"),
    ({'optimizer__trunk__0__W__v': numpy.zeros((4, 1, 3, 3))},
     r"'optimizer/trunk/0/W/v' is float64 .* parameter trunk/0/W is float32"),
    ({'epoch': numpy.array(2 ** 40)}, 'at epoch 1099511627776 of a 2-epoch run'),
])
def test_a_forged_snapshot_field_is_refused_naming_it(tmp_path, changes, match):
    snap = tmp_path / 's.npz'
    data = _snapshot(snap)
    _forge(snap, **changes)
    with pytest.raises(ModelFileError, match=match):
        _resume(snap, data)


def test_a_huge_rng_position_is_refused_in_a_new_process_not_a_segfault(tmp_path):
    """numpy's MT19937 reads past its key array for a position beyond 624."""
    snap = tmp_path / 's.npz'
    _snapshot(snap)
    _forge(snap, rng__pos=numpy.array(10 ** 9), global_rng__pos=numpy.array(10 ** 9))
    script = textwrap.dedent('''
        import sys, numpy
        sys.path.insert(0, {root!r})
        from branchynet.training import checkpoint
        from branchynet.validation import InputError
        from tests.helpers import make_three_exit_net
        rng = numpy.random.RandomState(0)
        try:
            checkpoint.load({snap!r}, make_three_exit_net(), rng)
        except InputError as e:
            print('refused:', e)
        rng.permutation(100000), numpy.random.rand(100000)
    ''').format(root=ROOT, snap=str(snap))
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'refused:' in done.stdout and 'rng/pos' in done.stdout


def test_a_refused_snapshot_leaves_the_generators_as_they_were(tmp_path):
    snap = tmp_path / 's.npz'
    _snapshot(snap)
    _forge(snap, global_rng__pos=numpy.array(700))
    net = make_three_exit_net()  # seeds the global generator itself
    numpy.random.seed(11)
    before = numpy.random.get_state()[1].copy()
    rng = numpy.random.RandomState(4)
    with pytest.raises(ModelFileError):
        checkpoint.load(str(snap), net, rng)
    assert (numpy.random.get_state()[1] == before).all()
    assert rng.randint(1000) == numpy.random.RandomState(4).randint(1000)


def _huge_data(n=40):
    """Finite pixels of 1e30: the loss stays finite, Adam's update overflows."""
    x, y = _data(n)
    x[: n // 2] *= 1e30
    return x, y


def _weights(net):
    return {k: p.array.copy() for k, p in net.namedparams()}


@pytest.mark.parametrize('main', [True, False])
def test_an_update_making_weights_non_finite_stops_and_restores_them(tmp_path, main):
    from branchynet.net import NonFiniteLoss
    x, y = _huge_data()
    net = make_three_exit_net(seed=5)
    before = _weights(net)
    snap = tmp_path / 's.npz'
    with pytest.raises(NonFiniteLoss, match='NaN or infinite .* although the loss was finite'):
        utils.train_exits(net, x, y, main=main, batchsize=8, num_epoch=2, seed=3,
                          progress=False, snapshot=str(snap))
    after = _weights(net)
    assert all((before[k] == after[k]).all() for k in before)


def test_a_diverged_update_keeps_the_last_epoch_end_and_its_snapshot(tmp_path):
    from branchynet.net import NonFiniteLoss
    x, y = _data()
    snap = tmp_path / 's.npz'
    saved = {}
    net = make_three_exit_net(seed=5)

    def poison(epoch, losses, accs):
        saved['snapshot'], saved['weights'] = snap.read_bytes(), _weights(net)
        x[:20] *= 1e30
    with pytest.raises(NonFiniteLoss, match='although the loss was finite'):
        utils.train_exits(net, x, y, batchsize=8, num_epoch=3, seed=3, progress=False,
                          snapshot=str(snap), on_epoch_end=poison)
    assert snap.read_bytes() == saved['snapshot']
    assert all((saved['weights'][k] == v).all() for k, v in _weights(net).items())


def _diverged_net():
    net = make_three_exit_net()
    net.trunk[0].W.array[0, 0, 0, 0] = numpy.nan
    return net


@pytest.mark.parametrize('save', ['save_npz', 'save_dill'])
def test_a_model_with_non_finite_weights_never_replaces_a_good_file(tmp_path, save):
    from branchynet.io import fileio
    from branchynet.validation import InputError
    path = tmp_path / 'model.bin'
    getattr(fileio, save)(str(path), make_three_exit_net())
    good = path.read_bytes()
    with pytest.raises(InputError, match='NaN or infinite'):
        getattr(fileio, save)(str(path), _diverged_net())
    assert path.read_bytes() == good


def test_a_snapshot_of_non_finite_weights_is_not_written(tmp_path):
    from branchynet.validation import InputError
    with pytest.raises(InputError, match='NaN or infinite'):
        checkpoint.save(str(tmp_path / 's.npz'), _diverged_net(),
                        numpy.random.RandomState(0), 0, [], [])
    assert not (tmp_path / 's.npz').exists()


def _moments_nonfinite(path):
    with numpy.load(str(path)) as z:
        return [k for k in z.files if k.startswith('optimizer/') and z[k].dtype.kind == 'f'
                and not numpy.isfinite(z[k]).all()]


@pytest.mark.parametrize('main', [True, False])
def test_a_snapshot_never_keeps_non_finite_adam_moments(tmp_path, main):
    """One batch per epoch of pixels 1e20: the first update squares gradients
    past float32 (Adam's v becomes infinite) while the weights stay finite;
    the epoch's end then stops training with the state put back, instead of
    writing a snapshot that --resume would refuse."""
    from branchynet.net import NonFiniteLoss
    x, y = _data(8)
    x *= 1e20
    net = make_three_exit_net(seed=5)
    before = _weights(net)
    snap = tmp_path / 's.npz'
    with pytest.raises(NonFiniteLoss, match='optimizer state array.* NaN or infinite .*loss '
                                            'and the weights were finite'):
        utils.train_exits(net, x, y, main=main, batchsize=8, num_epoch=2, seed=3,
                          progress=False, snapshot=str(snap))
    assert not snap.exists() or not _moments_nonfinite(snap)
    after = _weights(net)
    assert all((before[k] == after[k]).all() for k in before)
    from branchynet.validation import nonfinite_optimizer_state
    assert not nonfinite_optimizer_state(net.optimizer)


def test_a_snapshot_of_non_finite_optimizer_state_is_not_written(tmp_path):
    from branchynet.validation import InputError
    net = make_three_exit_net()
    x, y = _data(8)
    net.train(x, y)
    net.optimizer.target.trunk[0].W.update_rule.state['v'][0] = numpy.inf
    with pytest.raises(InputError, match=r'optimizer state /trunk/0/W/v holds NaN or infinite'):
        checkpoint.save(str(tmp_path / 's.npz'), net, numpy.random.RandomState(0), 1,
                        [[1., 1., 1.]], [[0., 0., 0.]])
    assert not (tmp_path / 's.npz').exists()
