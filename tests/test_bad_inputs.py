"""Library bad inputs that used to pass silently or end in a traceback: each
now gets an error of a validation class naming what was wrong."""
import chainer
import numpy
import pytest

from branchynet import utils
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net

X = numpy.random.RandomState(0).randn(6, 1, 8, 8).astype(numpy.float32)
T = numpy.array([0, 1, 2, 3, 4, 0], numpy.int32)
OUT_OF_RANGE = numpy.array([0, 1, 2, 3, 4, 9], numpy.int32)


@pytest.fixture(scope='module')
def net():
    return make_three_exit_net(seed=3)


@pytest.mark.parametrize('call', [
    lambda n: n.test(X, OUT_OF_RANGE, 0.5),
    lambda n: n.test_main(X, OUT_OF_RANGE),
    lambda n: utils.measure_branchy(n, X, OUT_OF_RANGE, 0.5),
    lambda n: utils.measure_main(n, X, OUT_OF_RANGE),
    lambda n: utils.test(n, X, OUT_OF_RANGE, thresholds=0.5),
])
def test_labels_beyond_the_classes_are_refused(net, call):
    with pytest.raises(InputError, match=r'within 0\.\.4, got values from 0 to 9'):
        call(net)


def test_measure_branchy_applies_the_measures_bounds(net):
    net.confidence = 'maxprob'
    try:
        with pytest.raises(InputError, match=r'thresholds\[0\] is 5.0, above 1'):
            utils.measure_branchy(net, X, T, 5)
    finally:
        net.confidence = 'entropy'


@pytest.mark.parametrize('value, match', [
    ({0.1: 'a', 0.2: 'b'}, 'got a dict'),
    ({0.1, 0.2}, 'got a set'),
    (10 ** 400, r'too large'),
    ([0.1, 10 ** 400], r'too large'),
])
def test_threshold_containers_and_sizes(net, value, match):
    with pytest.raises(InputError, match=match):
        net.predict(X, value)


def test_uint8_and_int64_labels_train_like_int32():
    a, b = make_three_exit_net(seed=1), make_three_exit_net(seed=1)
    la = a.train(X, T)
    lb = b.train(X, T.astype(numpy.uint8))
    assert la == lb
    assert b.train_main(X, T.astype(numpy.int64)) == a.train_main(X, T)


def test_labels_too_large_for_int32_are_refused(net):
    with pytest.raises(InputError, match='within'):
        make_three_exit_net().train(X, numpy.array([0, 1, 2, 3, 4, 2 ** 32], numpy.int64))


def test_a_chainer_variable_is_refused_with_a_hint(net):
    with pytest.raises(InputError, match=r'got chainer.Variable \(pass x.array\)'):
        net.predict(chainer.Variable(X), 0.5)


@pytest.mark.parametrize('kwargs', [
    {'percentTrainKeeps': numpy.float32(0.5)},
    {'exit_weights': numpy.array([1, 1, 0.3], numpy.float32)},
    {'exit_weights': [numpy.float32(1), numpy.int64(1), 0.3]},
])
def test_numpy_numbers_are_accepted_as_numbers(kwargs):
    net = make_three_exit_net(**kwargs)
    assert all(isinstance(w, float) for w in net.exit_weights)
    assert isinstance(net.percentTrainKeeps, float)


@pytest.mark.parametrize('weights, match', [
    (1.0, r'exit_weights must be a list of 3 .*got 1.0'),
    ([1, float('inf'), 1], r'exit_weights\[1\] is inf'),
    ([1, float('nan'), 1], r'exit_weights\[1\] is nan'),
    ([1, -1, 1], r'exit_weights\[1\] is -1'),
    ([1, 1], r'got 2 value'),
])
def test_exit_weights_must_be_finite_non_negative_one_per_exit(weights, match):
    with pytest.raises(InputError, match=match):
        make_three_exit_net(exit_weights=weights)


@pytest.mark.parametrize('call, match', [
    (lambda n: n.predict(X, 0.5, batchsize=-1), 'batchsize must be a positive integer, got -1'),
    (lambda n: n.predict(X, 0.5, batchsize=0), 'batchsize must be a positive integer, got 0'),
    (lambda n: n.get_SM(X, batchsize=0), 'batchsize must be a positive integer, got 0'),
    (lambda n: n.get_logits(X, batchsize=2.5), r'batchsize must be a positive integer, got 2.5'),
    (lambda n: n.predict_main(X, batchsize=-3), 'got -3'),
    (lambda n: n.test(X, T, 0.5, batchsize=0), 'got 0'),
])
def test_batch_sizes_must_be_positive_integers(net, call, match):
    with pytest.raises(InputError, match=match):
        call(net)


def test_predict_and_friends_default_to_bounded_batches(net, monkeypatch):
    """The default batch size is bounded: 3000 samples are routed in chunks."""
    from branchynet import net as net_module
    seen = []
    real = net.trunk.forward

    def spy(x, *args, **kwargs):
        seen.append(len(x))
        return real(x, *args, **kwargs)
    monkeypatch.setattr(net.trunk, 'forward', spy)
    x = numpy.zeros((3000, 1, 8, 8), numpy.float32)
    for call in (lambda: net.predict(x, 0.0), lambda: net.predict_main(x),
                 lambda: net.get_SM(x), lambda: net.test(x, numpy.zeros(3000, numpy.int32), 0.0),
                 lambda: net.test_main(x, numpy.zeros(3000, numpy.int32))):
        seen.clear()
        call()
        assert seen and max(seen) <= net_module.DEFAULT_BATCHSIZE < 3000


@pytest.mark.parametrize('trust', ['no', 1, 'yes', [True]])
def test_load_dill_needs_trust_to_be_exactly_true(tmp_path, trust):
    from branchynet.io import fileio
    fileio.save_dill(tmp_path / 'm.bn', make_three_exit_net())
    with pytest.raises(PermissionError, match='trust=True'):
        fileio.load_dill(tmp_path / 'm.bn', trust=trust)


def test_load_dill_on_a_folder_or_missing_file(tmp_path):
    from branchynet.io import fileio
    with pytest.raises(InputError, match='is a folder; expected a .bn model file'):
        fileio.load_dill(tmp_path, trust=True)
    with pytest.raises(FileNotFoundError, match='nothing.bn does not exist'):
        fileio.load_dill(tmp_path / 'nothing.bn', trust=True)
