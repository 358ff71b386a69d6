"""Training beyond the original's recipe: self-distillation of the early exits,
per-exit loss weights, Adam's beta1 and a cosine learning-rate schedule, in
``train_exits``, the snapshots and the driver's options."""
import copy
import json
import os
import signal

import chainer
import chainer.links as L
import numpy
import pytest

from branchynet import Branch, BranchyNet, utils
from branchynet.driver import cli, run as experiment
from branchynet.training import checkpoint, loop as training
from branchynet.net import distillation_loss
from branchynet.validation import InvalidValue
from tests.helpers import make_three_exit_net

DISTILL = {'distill_weight': 1.0, 'distill_temperature': 3.0}


def _data(n=64):
    rng = numpy.random.RandomState(0)
    return (rng.randn(n, 1, 8, 8).astype(numpy.float32),
            rng.randint(0, 5, n).astype(numpy.int32))


def _weights(net):
    return {k: p.array.copy() for k, p in net.namedparams()}


def _grads(net):
    return {k: p.grad.copy() for k, p in net.namedparams() if p.grad is not None}


def _teacher_params(net):
    """Names of the parameters only the last exit's output depends on: its
    head and the trunk layers after the last early exit's branch point."""
    names = {'/branches/{}'.format(net.numexits() - 1)}
    names |= {'/trunk/{}'.format(i) for i in range(net.branch_points[-2], len(net.trunk))}
    return [k for k, _ in net.namedparams() if any(k.startswith(n + '/') for n in names)]


def test_distillation_loss_is_temperature_squared_kl_from_the_last_exit():
    rng = numpy.random.RandomState(1)
    z = [chainer.Variable(rng.randn(6, 5).astype(numpy.float32)) for _ in range(3)]
    t = 2.5

    def softmax(a):
        e = numpy.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    p = softmax(z[-1].array.astype(numpy.float64) / t)
    expected = sum((p * (numpy.log(p) - numpy.log(softmax(v.array.astype(numpy.float64) / t))))
                   .sum(axis=1).mean() for v in z[:-1]) * t ** 2
    assert float(distillation_loss(z, t).array) == pytest.approx(expected, rel=1e-5)
    same = [chainer.Variable(z[-1].array.copy()) for _ in range(3)]
    assert float(distillation_loss(same, t).array) == pytest.approx(0, abs=1e-6)


def test_distillation_sends_no_gradient_into_the_last_exit():
    x, y = _data()
    plain = make_three_exit_net(seed=4)
    distilled = copy.deepcopy(plain)
    training.apply_recipe(distilled, **DISTILL)
    plain.train(x, y)
    distilled.train(x, y)
    g_plain, g_distilled = _grads(plain), _grads(distilled)
    teacher = _teacher_params(plain)
    assert teacher
    for name in teacher:  # the last exit's path: the distillation term adds nothing
        numpy.testing.assert_array_equal(g_distilled[name], g_plain[name], err_msg=name)
    students = [k for k in g_plain if k.startswith(('/branches/0/', '/branches/1/'))]
    assert students and all(not numpy.array_equal(g_distilled[k], g_plain[k])
                            for k in students)  # the early exits do learn from it


def test_distillation_weight_zero_trains_as_the_original():
    x, y = _data()
    plain = make_three_exit_net(seed=4)
    off = make_three_exit_net(seed=4)
    utils.train(plain, x, y, batchsize=16, num_epoch=1, seed=2, progress=False)
    utils.train(off, x, y, batchsize=16, num_epoch=1, seed=2, progress=False,
                distill_weight=0.0)
    for k, v in _weights(plain).items():
        numpy.testing.assert_array_equal(_weights(off)[k], v, err_msg=k)


def test_distillation_refused_with_handed_off_samples():
    net = make_three_exit_net(percentTrainKeeps=0.5)
    with pytest.raises(InvalidValue, match='percentTrainKeeps'):
        training.apply_recipe(net, distill_weight=1.0)


@pytest.mark.parametrize('options, match', [
    ({'distill_weight': -1.0}, 'distill_weight'),
    ({'distill_weight': float('nan')}, 'distill_weight'),
    ({'distill_weight': 1.0, 'distill_temperature': 0}, 'distill_temperature'),
    ({'distill_temperature': 2.0}, 'needs distill_weight'),
    ({'adam_beta1': 1.0}, 'adam_beta1'),
    ({'exit_weights': [1.0, 0.3]}, 'exit_weights'),
    ({'lr_schedule': 'linear'}, 'lr_schedule'),
    ({'shift': -1}, 'shift'),
    # 8x8 images: a shift of 5 or more moves most of an image out of view; 10 ** 9
    # failed in numpy.pad, 10 ** 23 in the offsets' draw
    ({'shift': 5}, r'shift must be at most 4 pixels for 8x8 images \(half the smaller side'),
    ({'shift': 8}, 'shift must be at most 4 pixels'),
    ({'shift': 100}, 'shift must be at most 4 pixels'),
    ({'shift': 10 ** 9}, 'shift must be at most 4 pixels'),
    ({'shift': 10 ** 23}, 'shift must be at most 4 pixels'),
    # T ** 2 scales the loss: 1e308 overflowed at the first joint step
    ({'distill_weight': 1.0, 'distill_temperature': 1e308},
     r'distill_temperature must be a number in \[0.1, 100\] \(a softening temperature; '
     r'default 3\), got 1e\+308'),
    ({'distill_weight': 1.0, 'distill_temperature': float('inf')}, r'\[0.1, 100\]'),
    ({'distill_weight': 1.0, 'distill_temperature': 1e-300}, r'\[0.1, 100\]'),
])
def test_bad_recipe_options_are_refused_before_training(options, match):
    x, y = _data()
    net = make_three_exit_net()
    before = _weights(net)
    with pytest.raises(InvalidValue, match=match):
        utils.train(net, x, y, main=True, batchsize=16, num_epoch=1, progress=False, **options)
    for k, v in before.items():
        numpy.testing.assert_array_equal(_weights(net)[k], v, err_msg=k)


def test_adam_beta1_needs_adam():
    net = make_three_exit_net(opt='MomentumSGD')
    with pytest.raises(InvalidValue, match="opt='Adam'"):
        training.apply_recipe(net, adam_beta1=0.99)


def test_exit_weights_option_weights_each_exit_loss():
    x, y = _data()
    net = make_three_exit_net(seed=4)
    before = _weights(net)
    utils.train(net, x, y, batchsize=16, num_epoch=1, progress=False,
                exit_weights=[1.0, 0.5, 0.0])
    assert net.exit_weights == [1.0, 0.5, 0.0]
    after = _weights(net)
    last = [k for k in after if k.startswith('/branches/2/')]
    assert last and all(numpy.array_equal(after[k], before[k]) for k in last)
    assert not numpy.array_equal(after['/branches/0/1/W'], before['/branches/0/1/W'])


def test_adam_beta1_option_trains_as_an_adam_built_with_it():
    x, y = _data()
    via_option = make_three_exit_net(seed=4)
    by_hand = make_three_exit_net(seed=4)
    by_hand.optimizer = chainer.optimizers.Adam(alpha=by_hand.alpha, beta1=0.99)
    by_hand.optimizer.setup(by_hand)
    for main in (True, False):
        utils.train(via_option, x, y, main=main, batchsize=16, num_epoch=2, seed=2,
                    progress=False, adam_beta1=0.99)
        utils.train(by_hand, x, y, main=main, batchsize=16, num_epoch=2, seed=2,
                    progress=False)
    default = make_three_exit_net(seed=4)
    utils.train(default, x, y, batchsize=16, num_epoch=2, seed=2, progress=False)
    for k, v in _weights(by_hand).items():
        numpy.testing.assert_array_equal(_weights(via_option)[k], v, err_msg=k)
    assert not numpy.array_equal(_weights(default)['/trunk/0/W'],
                                 _weights(via_option)['/trunk/0/W'])


def test_lr_factor_falls_from_one_towards_zero_along_a_half_cosine():
    total = 8
    factors = [training.lr_factor('cosine', t, total) for t in range(total)]
    assert factors[0] == 1.0 and factors[total // 2] == pytest.approx(0.5)
    assert all(a > b > 0 for a, b in zip(factors, factors[1:]))
    assert factors[-1] == pytest.approx((1 + numpy.cos(numpy.pi * 7 / 8)) / 2)
    assert {training.lr_factor('constant', t, total) for t in range(total)} == {1.0}


@pytest.mark.parametrize('opt, name', [('Adam', 'alpha'), ('MomentumSGD', 'lr')])
def test_cosine_schedule_steps_with_the_scheduled_step_size(opt, name):
    """Every update uses the network's step size times ``lr_factor`` of its
    batch, over both epochs, and the network's own value is back afterwards."""
    x, y = _data()
    net = make_three_exit_net(seed=4, opt=opt)
    hyper = net.ensure_optimizer().hyperparam
    base = getattr(hyper, name)
    seen, step = [], net.train

    def spy(xb, yb):
        seen.append(getattr(hyper, name))
        return step(xb, yb)
    net.train = spy
    utils.train(net, x, y, batchsize=16, num_epoch=2, seed=2, progress=False,
                lr_schedule='cosine')
    expected = [base * training.lr_factor('cosine', t, 8) for t in range(8)]
    numpy.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert getattr(hyper, name) == base


def test_constant_schedule_trains_as_the_original():
    x, y = _data()
    plain, constant = make_three_exit_net(seed=4), make_three_exit_net(seed=4)
    utils.train(plain, x, y, batchsize=16, num_epoch=1, seed=2, progress=False)
    utils.train(constant, x, y, batchsize=16, num_epoch=1, seed=2, progress=False,
                lr_schedule='constant')
    for k, v in _weights(plain).items():
        numpy.testing.assert_array_equal(_weights(constant)[k], v, err_msg=k)


def _recorded(path):
    with numpy.load(path) as npz:
        return json.loads(str(npz['settings']))


def test_snapshot_records_only_what_differs_from_the_original(tmp_path):
    x, y = _data()
    original, changed = str(tmp_path / 'o.npz'), str(tmp_path / 'c.npz')
    utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                snapshot=original)
    assert not set(_recorded(original)) & set(training.RECIPE_OPTIONS)
    utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                snapshot=changed, exit_weights=[1, 0.3, 0.3], adam_beta1=0.99,
                lr_schedule='cosine', shift=1, flip=True, **DISTILL)
    recorded = _recorded(changed)
    assert recorded['exit_weights'] == [1, 0.3, 0.3] and recorded['adam_beta1'] == 0.99
    assert recorded['lr_schedule'] == 'cosine' and recorded['shift'] == 1
    assert recorded['flip'] is True
    assert (recorded['distill_weight'], recorded['distill_temperature']) == (1.0, 3.0)
    main = str(tmp_path / 'm.npz')  # the main network alone: only beta1 matters
    utils.train(make_three_exit_net(), x, y, main=True, batchsize=16, num_epoch=1,
                progress=False, snapshot=main, exit_weights=[1, 0.3, 0.3], adam_beta1=0.99,
                **DISTILL)
    assert set(_recorded(main)) & set(training.RECIPE_OPTIONS) == {'adam_beta1'}


@pytest.mark.parametrize('first, then, name', [
    (DISTILL, {}, 'distill_weight'),
    (DISTILL, {'distill_weight': 0.5}, 'distill_weight'),
    (DISTILL, {'distill_weight': 1.0, 'distill_temperature': 2.0}, 'distill_temperature'),
    ({'exit_weights': [1, 1, 0.3]}, {}, 'exit_weights'),
    ({}, {'exit_weights': [1, 1, 0.3]}, 'exit_weights'),
    ({'adam_beta1': 0.99}, {}, 'adam_beta1'),
    ({}, {'adam_beta1': 0.99}, 'adam_beta1'),
    ({'lr_schedule': 'cosine'}, {}, 'lr_schedule'),
    ({}, {'lr_schedule': 'cosine'}, 'lr_schedule'),
    ({'shift': 1}, {'shift': 2}, 'shift'),
    ({'flip': True}, {}, 'flip'),
    ({}, {'flip': True}, 'flip'),
])
def test_resume_refuses_another_recipe(tmp_path, first, then, name):
    x, y = _data()
    snap = str(tmp_path / 's.npz')
    utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                snapshot=snap, **first)
    with pytest.raises(InvalidValue, match='other settings.*{}'.format(name)):
        utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=2, progress=False,
                    snapshot=snap, resume=True, **then)


def test_interrupted_recipe_run_resumes_to_the_uninterrupted_weights(tmp_path):
    x, y = _data()
    options = dict(DISTILL, adam_beta1=0.99, exit_weights=[1, 0.5, 0.3], lr_schedule='cosine',
                   shift=1, flip=True)
    reference = make_three_exit_net(seed=5)
    utils.train(reference, x, y, batchsize=16, num_epoch=2, seed=3, progress=False, **options)
    snap = str(tmp_path / 'run.npz')
    net = make_three_exit_net(seed=5)
    step, calls = net.train, {'n': 0}

    def step_then_signal(xb, yb):
        calls['n'] += 1
        if calls['n'] == 6:  # epoch 2, batch 2
            os.kill(os.getpid(), signal.SIGINT)
        return step(xb, yb)
    net.train = step_then_signal
    with pytest.raises(checkpoint.TrainingInterrupted):
        utils.train(net, x, y, batchsize=16, num_epoch=2, seed=3, progress=False,
                    snapshot=snap, **options)
    resumed = make_three_exit_net(seed=99)
    utils.train(resumed, x, y, batchsize=16, num_epoch=2, seed=3, progress=False,
                snapshot=snap, resume=True, **options)
    for k, v in _weights(reference).items():
        numpy.testing.assert_array_equal(_weights(resumed)[k], v, err_msg=k)


def test_driver_passes_the_recipe_options_on(monkeypatch):
    seen = {}
    monkeypatch.setattr(experiment, 'run', lambda *a, **k: seen.update(overrides=a[5]))
    assert cli.main(['--preset', 'tiny', '--exit-weights', '1,0.3', '--distill-weight', '2',
                     '--distill-temperature', '4', '--adam-beta1', '0.99',
                     '--lr-schedule', 'cosine', '--shift', '2', '--flip']) == 0
    assert {k: seen['overrides'][k] for k in training.RECIPE_OPTIONS} == {
        'exit_weights': [1.0, 0.3], 'distill_weight': 2.0, 'distill_temperature': 4.0,
        'adam_beta1': 0.99, 'lr_schedule': 'cosine', 'shift': 2, 'flip': True}


def test_driver_refuses_unreadable_exit_weights(capsys):
    assert cli.main(['--preset', 'tiny', '--exit-weights', '1,heavy']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--exit-weights' in err[0] and 'comma-separated' in err[0]


@pytest.mark.parametrize('argv, words', [
    (['--shift', '-1'], '--shift must be a whole number'),
    (['--shift', '2', '--augment'], '--shift and --augment'),
    (['--flip', '--augment'], '--flip and --augment'),
])
def test_driver_refuses_bad_shift_in_one_line(capsys, argv, words):
    assert cli.main(['--preset', 'tiny'] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_driver_refuses_an_absurd_distillation_temperature_in_one_line(tmp_path, capsys):
    code = cli.main(['--preset', 'tiny', '--out', str(tmp_path / 'out'), '--distill-weight',
                     '1', '--distill-temperature', '1e308'])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--distill-temperature must be a number in [0.1, 100]' in err[0]
    assert not (tmp_path / 'out').exists()


def test_joint_training_refuses_a_shift_as_large_as_the_images(tmp_path):
    x, y = _data()
    net = make_three_exit_net()
    with pytest.raises(InvalidValue, match='shift must be at most 4 pixels for 8x8 images'):
        utils.train(net, x, y, batchsize=16, num_epoch=1, progress=False, shift=8)
    utils.train(net, x, y, batchsize=16, num_epoch=1, progress=False, shift=4)


def test_driver_recipe_reaches_training(tmp_path, monkeypatch):
    """The driver's config keys become ``train_exits``' options in both phases."""
    calls = []
    real = training.train_exits

    class JointReached(Exception):
        pass

    def spy(*a, **k):
        calls.append({o: k.get(o) for o in training.RECIPE_OPTIONS})
        if not k.get('main'):
            raise JointReached  # nothing after training matters here
        return real(*a, **k)
    monkeypatch.setattr(training, 'train_exits', spy)
    rng = numpy.random.RandomState(0)
    data = str(tmp_path / 'd.npz')
    numpy.savez(data, train_x=rng.rand(300, 1, 28, 28).astype(numpy.float32),
                train_y=rng.randint(0, 10, 300).astype(numpy.int32),
                test_x=rng.rand(40, 1, 28, 28).astype(numpy.float32),
                test_y=rng.randint(0, 10, 40).astype(numpy.int32))
    with pytest.raises(JointReached):
        cli.main(['--preset', 'tiny', '--dataset', data, '--out', str(tmp_path / 'o'),
                  '--n-val', '50', '--adam-beta1', '0.99', '--distill-weight', '1',
                  '--lr-schedule', 'cosine', '--shift', '1', '--flip'])
    assert calls == [{'exit_weights': None, 'distill_weight': 1.0, 'distill_temperature': None,
                      'adam_beta1': 0.99, 'lr_schedule': 'cosine', 'shift': 1,
                      'flip': True}] * 2


def test_shift_moves_each_image_by_its_offset_with_edge_fill():
    from branchynet.augment import shift_batch
    x = numpy.arange(2 * 1 * 4 * 5, dtype=numpy.float32).reshape(2, 1, 4, 5)
    out = shift_batch(x, numpy.array([[1, 0], [0, -2]]), 2)
    numpy.testing.assert_array_equal(out[0, 0, 1:], x[0, 0, :-1])  # down by one row
    numpy.testing.assert_array_equal(out[0, 0, 0], x[0, 0, 0])     # the edge repeats
    numpy.testing.assert_array_equal(out[1, 0, :, :3], x[1, 0, :, 2:])  # left by two
    numpy.testing.assert_array_equal(out[1, 0, :, 3:], x[1, 0, :, 4:].repeat(2, axis=1))
    numpy.testing.assert_array_equal(shift_batch(x, numpy.zeros((2, 2), int), 2), x)


def test_shift_trains_on_the_moved_images_of_each_epoch():
    """Each step sees exactly ``shift_batch`` of its samples with the
    offsets ``epoch_shifts`` gives for (seed, epoch), and they change per epoch."""
    from branchynet.augment import epoch_shifts, shift_batch
    x, y = _data(32)
    net = make_three_exit_net(seed=4)
    seen, step = [], net.train

    def spy(xb, yb):
        seen.append((xb.copy(), yb.copy()))
        return step(xb, yb)
    net.train = spy
    utils.train(net, x, y, batchsize=16, num_epoch=2, seed=2, progress=False, shift=2)
    for epoch in range(2):
        offsets = epoch_shifts(2, epoch, len(x), 2)
        for xb, yb in seen[2 * epoch:2 * epoch + 2]:
            for xi, yi in zip(xb, yb):
                matches = [i for i in range(len(x)) if y[i] == yi and numpy.array_equal(
                    shift_batch(x[i:i + 1], offsets[i:i + 1], 2)[0], xi)]
                assert len(matches) == 1
    originals = {tuple(xi.ravel()) for xi in x}
    assert sum(tuple(xi.ravel()) not in originals for xb, _ in seen for xi in xb) > len(x)
    assert not numpy.array_equal(epoch_shifts(2, 0, 32, 2), epoch_shifts(2, 1, 32, 2))


def test_shift_is_refused_with_augment_and_when_not_a_whole_pixel_count():
    x, y = _data()
    for bad in (-1, 1.5, True, '2'):
        with pytest.raises(InvalidValue, match='shift'):
            utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1,
                        progress=False, shift=bad)
    flat = BranchyNet([Branch([L.Linear(4, 3)]), L.Linear(4, 4), Branch([L.Linear(4, 3)])],
                      input_shape=(4,))
    with pytest.raises(InvalidValue, match=r'shift moves images.*\(N, C, H, W\)'):
        utils.train(flat, x.reshape(len(x), -1)[:, :4], y % 3, batchsize=16, num_epoch=1,
                    progress=False, shift=1)
    utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                shift=numpy.int64(1))  # a numpy integer is a whole number too
    with pytest.raises(InvalidValue, match='shift and augment'):
        utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                    shift=1, augment=True)


def test_flip_mirrors_the_flagged_images_only():
    from branchynet.augment import epoch_flips, flip_batch
    x = numpy.arange(3 * 2 * 2 * 3, dtype=numpy.float32).reshape(3, 2, 2, 3)
    out = flip_batch(x.copy(), numpy.array([True, False, True]))
    numpy.testing.assert_array_equal(out[[0, 2]], x[[0, 2], :, :, ::-1])
    numpy.testing.assert_array_equal(out[1], x[1])
    flags = epoch_flips(7, 0, 10000)
    assert 0.45 < flags.mean() < 0.55  # each image with probability 1/2
    numpy.testing.assert_array_equal(flags, epoch_flips(7, 0, 10000))
    assert not numpy.array_equal(flags, epoch_flips(7, 1, 10000))


def test_flip_and_shift_train_on_the_moved_then_mirrored_images_of_each_epoch():
    """Each step sees exactly its samples shifted by ``epoch_shifts`` and then
    mirrored where ``epoch_flips`` says so, for (seed, epoch)."""
    from branchynet.augment import epoch_flips, epoch_shifts, flip_batch, shift_batch
    x, y = _data(32)
    net = make_three_exit_net(seed=4)
    seen, step = [], net.train

    def spy(xb, yb):
        seen.append(xb.copy())
        return step(xb, yb)
    net.train = spy
    utils.train(net, x, y, batchsize=16, num_epoch=2, seed=2, progress=False, shift=1,
                flip=True)
    mirrored = 0
    for epoch in range(2):
        offsets, flags = epoch_shifts(2, epoch, len(x), 1), epoch_flips(2, epoch, len(x))
        want = flip_batch(shift_batch(x, offsets, 1), flags)
        got = numpy.concatenate(seen[2 * epoch:2 * epoch + 2])
        for xi in got:  # every image seen is its own sample's, moved then mirrored
            assert sum(numpy.array_equal(xi, w) for w in want) == 1
        mirrored += flags.sum()
    assert 0 < mirrored < 2 * len(x)


def test_flip_is_refused_with_augment_on_flat_inputs_and_when_not_a_bool():
    x, y = _data()
    with pytest.raises(InvalidValue, match='flip must be True or False'):
        utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                    flip='yes')
    with pytest.raises(InvalidValue, match='flip and augment are alternatives'):
        utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                    flip=True, augment=True)
    flat = BranchyNet([Branch([L.Linear(4, 3)]), L.Linear(4, 4), Branch([L.Linear(4, 3)])],
                      input_shape=(4,))
    with pytest.raises(InvalidValue, match=r'flip mirrors images.*\(N, C, H, W\)'):
        utils.train(flat, x.reshape(len(x), -1)[:, :4], y % 3, batchsize=16, num_epoch=1,
                    progress=False, flip=True)
