"""``BranchyNet.calibrate``: one call chooses, sets and returns thresholds;
``save_npz``/``load_npz`` keep them with the confidence measure."""
import chainer
import numpy
import pytest

from branchynet.evaluation import calibration, screening
from branchynet.io import fileio
from branchynet.io.safenpz import ModelFileError
from branchynet.validation import InputError, InvalidValue
from tests.helpers import make_three_exit_net


def _data(n=120, seed=3):
    rng = numpy.random.RandomState(seed)
    x = rng.randn(n, 1, 8, 8).astype(numpy.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(numpy.int32)  # learnable: 2 classes
    return x, y


@pytest.fixture(scope='module')
def trained():
    net = make_three_exit_net(seed=4)
    x, y = _data(400, seed=5)
    for _ in range(30):
        net.train(x, y)
    return net


def _predict_agrees(net, x, y, r):
    """The returned accuracy and exit counts are those of net.predict with the
    thresholds it set."""
    labels, exits = net.predict(x)
    assert r['acc'] == pytest.approx(float((labels == y).mean()))
    assert r['exit_counts'] == numpy.bincount(exits, minlength=net.numexits()).tolist()


def test_calibrate_sets_thresholds_that_reach_the_target(trained):
    net = trained.copy(mode='copy')
    x, y = _data()
    r = net.calibrate(x, y, target_acc=0.6, cost_samples=20)
    assert net.thresholdExits == r['thresholds'] and net.confidence == 'entropy'
    assert r['met'] and r['acc'] >= 0.6
    assert len(r['path_ms']) == net.numexits() and r['cost'] > 0
    _predict_agrees(net, x, y, r)


def test_default_target_is_the_last_exits_validation_accuracy(trained):
    net = trained.copy(mode='copy')
    x, y = _data()
    r = net.calibrate(x, y, cost_samples=10)
    last = float((net.get_logits(x)[-1].argmax(axis=1) == y).mean())
    assert r['target_acc'] == pytest.approx(last)
    # "nobody leaves early" reaches the last exit's accuracy, so it is always met
    assert r['met'] and r['acc'] >= last


def test_an_unreachable_target_warns_in_one_line(trained):
    net = trained.copy(mode='copy')
    x, y = _data()
    best = max(float((z.argmax(axis=1) == y).mean()) for z in net.get_logits(x))
    with pytest.warns(calibration.UnmetGoalWarning) as caught:
        r = net.calibrate(x, y, target_acc=1.0, cost_samples=5)
    assert not r['met'] and r['acc'] < 1.0 and best < 1.0
    (w,) = caught
    assert '\n' not in str(w.message)
    assert str(w.message).startswith('calibrate: no thresholds reach target_acc=1 on these '
                                     '120 validation samples; the most accurate reach ')
    with pytest.warns(calibration.UnmetGoalWarning, match='no thresholds cost at most the '
                                                          'budget of 1e-09 ms'):
        assert not net.calibrate(x, y, budget=1e-9, cost_samples=5)['met']


def test_budget_is_ms_per_sample_on_the_given_engine(trained):
    net = trained.copy(mode='copy')
    x, y = _data()
    seen = []

    class Spy:  # an engine: the model's own, recording that it was used
        def __init__(self, net):
            self.inner = net.chainer_engine()
            self.xp, self.net, self.steps = self.inner.xp, net, self.inner.steps

        def send(self, xb):
            return self.inner.send(xb)

        def route(self, xb, ts, timer):
            seen.append(len(xb))
            return self.inner.route(xb, ts, timer)
    free = net.calibrate(x, y, target_acc=0.0 + 1e-9, engine=Spy(net), cost_samples=7)
    assert seen and set(seen) == {1} and len(seen) == 7 * net.numexits()
    budget = (free['path_ms'][0] + free['path_ms'][-1]) / 2
    r = calibration.calibrate_thresholds(*screening.exit_outputs(net, x), y, free['path_ms'],
                                         budget=budget)
    assert r['cost'] <= budget


def test_other_measures_are_set_on_the_model(trained):
    net = trained.copy(mode='copy')
    x, y = _data()
    r = net.calibrate(x, y, target_acc=0.55, measure='maxprob', cost_samples=5)
    assert net.confidence == 'maxprob' and r['measure'] == 'maxprob'
    assert all(0 <= t <= 1 for t in r['thresholds'])
    _predict_agrees(net, x, y, r)


@pytest.mark.parametrize('n, seed, candidates', [(2, 4, 2), (64, 6, 64)])
def test_calibrated_thresholds_keep_every_sample_clear_of_them(trained, n, seed, candidates):
    """The cases found where the thresholds chosen were validation scores: a
    sample scoring exactly the threshold stayed at batch 64 and left at
    batch 1 (its logits differ in the last bits between batch sizes), so
    predict depended on the batch size. Two samples with candidates the two
    scores is the smallest; 64 samples with the default 64 candidates makes
    every candidate a score. Now every threshold lies strictly between two
    scores and both batch sizes give the same answers."""
    net = trained.copy(mode='copy')
    x, y = _data(n, seed=seed)
    r = net.calibrate(x, y, cost_samples=2, candidates=candidates, progress=False)
    scores, _ = screening.exit_outputs(net, x, 'entropy')
    for k, t in enumerate(r['thresholds']):
        below, above = scores[scores[:, k] < t, k], scores[scores[:, k] >= t, k]
        assert not (scores[:, k] == t).any()
        if len(below) and len(above):
            assert below.max() < t < above.min()
    one, many = net.predict(x, batchsize=1), net.predict(x, batchsize=64)
    numpy.testing.assert_array_equal(one[0], many[0])
    numpy.testing.assert_array_equal(one[1], many[1])
    _predict_agrees(net, x, y, r)


@pytest.mark.parametrize('kwargs, message', [
    ({'target_acc': 0.9, 'budget': 1.0}, 'not both'),
    ({'target_acc': 1.5}, 'target_acc must be'),
    ({'budget': -1}, 'budget must be'),
    ({'measure': 'nope'}, 'unknown confidence measure'),
])
def test_bad_goals_are_refused_and_leave_the_model_alone(trained, kwargs, message):
    net = trained.copy(mode='copy')
    net.thresholdExits = [0.1, 0.2]
    x, y = _data(30)
    with pytest.raises(InvalidValue, match=message):
        net.calibrate(x, y, **kwargs)
    assert net.thresholdExits == [0.1, 0.2] and net.confidence == 'entropy'


@pytest.mark.parametrize('kwargs, message', [
    ({'measure': ['entropy']}, r"measure must be the name of a confidence measure \(entropy, "
                               r"maxprob, margin\), got a list: \['entropy'\]"),
    ({'cost_samples': 0}, 'cost_samples must be a positive integer, got 0'),
    ({'cost_samples': 2.5}, 'cost_samples must be a positive integer, got 2.5'),
    ({'candidates': 10 ** 12}, r'candidates must be a positive integer of at most 1024 '
                                r'\(quantiles tried per early exit\), got 1000000000000'),
    ({'engine': 'numba'}, r"engine must be None \(the model's own Chainer path\) or an "
                          r"inference engine .*numba.compile_engine\(net\); got the str "
                          r"'numba'"),
])
def test_bad_options_are_one_line_naming_the_argument(trained, kwargs, message):
    net = trained.copy(mode='copy')
    net.thresholdExits = [0.1, 0.2]
    x, y = _data(30)
    with pytest.raises(InputError, match=message) as info:
        net.calibrate(x, y, **kwargs)
    assert '\n' not in str(info.value)
    assert net.thresholdExits == [0.1, 0.2] and net.confidence == 'entropy'


def test_bad_labels_leave_the_model_alone(trained):
    net = trained.copy(mode='copy')
    net.thresholdExits = [0.1, 0.2]
    x, y = _data(30)
    with pytest.raises(InvalidValue, match='y_val'):
        net.calibrate(x, y + 7)
    assert net.thresholdExits == [0.1, 0.2]


def test_npz_keeps_thresholds_and_measure(tmp_path, trained):
    net = trained.copy(mode='copy')
    net.confidence = 'margin'
    net.thresholdExits = [0.25, 0.5]
    fileio.save_npz(tmp_path / 'm.npz', net)
    fresh = make_three_exit_net(seed=9)
    fileio.load_npz(tmp_path / 'm.npz', fresh)
    assert fresh.confidence == 'margin' and fresh.thresholdExits == [0.25, 0.5]
    x, _ = _data(40)
    for a, b in zip(net.predict(x), fresh.predict(x)):
        numpy.testing.assert_array_equal(a, b)


def test_npz_without_thresholds_saves_the_measure_and_clears_them(tmp_path, trained):
    net = trained.copy(mode='copy')
    net.confidence = 'maxprob'
    fileio.save_npz(tmp_path / 'm.npz', net)
    fresh = make_three_exit_net(seed=9)
    fresh.thresholdExits = [0.3, 0.3]
    fileio.load_npz(tmp_path / 'm.npz', fresh)
    assert fresh.confidence == 'maxprob' and fresh.thresholdExits is None


def test_files_written_before_the_exit_rule_was_saved_still_load(tmp_path, trained):
    # what save_npz wrote until now: chainer's own serializer, weights only
    chainer.serializers.save_npz(str(tmp_path / 'old.npz'), trained)
    fresh = make_three_exit_net(seed=9)
    fresh.thresholdExits = [0.3, 0.4]
    fileio.load_npz(tmp_path / 'old.npz', fresh)
    assert fresh.thresholdExits == [0.3, 0.4] and fresh.confidence == 'entropy'
    numpy.testing.assert_array_equal(fresh.trunk[0].W.array, trained.trunk[0].W.array)


def test_thresholds_for_another_network_are_refused_before_loading(tmp_path, trained):
    net = trained.copy(mode='copy')
    fileio.save_npz(tmp_path / 'm.npz', net)
    with numpy.load(tmp_path / 'm.npz') as f:
        entries = dict(f)
    entries['_exit_rule/thresholds'] = numpy.array([0.1, 0.2, 0.3])
    numpy.savez(tmp_path / 'bad.npz', **entries)
    fresh = make_three_exit_net(seed=9)
    before = fresh.trunk[0].W.array.copy()
    with pytest.raises(ModelFileError, match='thresholds do not fit'):
        fileio.load_npz(tmp_path / 'bad.npz', fresh)
    numpy.testing.assert_array_equal(fresh.trunk[0].W.array, before)


def test_dill_keeps_thresholds_and_measure(tmp_path, trained):
    net = trained.copy(mode='copy')
    net.confidence = 'maxprob'
    net.thresholdExits = [0.7, 0.8]
    fileio.save_dill(tmp_path / 'm.bn', net)
    back = fileio.load_dill(tmp_path / 'm.bn', trust=True)
    assert back.confidence == 'maxprob' and back.thresholdExits == [0.7, 0.8]
