"""The engines' shared batching loop (``branchynet.engines.base``): the
thresholds a ``predict`` call checks, and the Chainer contexts it enters."""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from branchynet import FL, Branch, BranchyNet
from branchynet.engines.fast import FastBranchyNet
from branchynet.measures import confidence
from branchynet.validation import InvalidValue
from tests import netgen


def _net():
    numpy.random.seed(0)
    net = BranchyNet([L.Convolution2D(1, 2, 3, pad=1), Branch([L.Linear(32, 3)]),
                      FL(F.relu), Branch([L.Linear(32, 3)])], input_shape=(1, 4, 4))
    netgen.randomize(net, numpy.random.RandomState(1))
    return net


def _x(n=16):
    return numpy.random.RandomState(0).randn(n, 1, 4, 4).astype(numpy.float32)


def _counting(net, monkeypatch):
    calls = []
    resolve = net.resolve_thresholds

    def counted(thresholds):
        calls.append(thresholds)
        return resolve(thresholds)
    monkeypatch.setattr(net, 'resolve_thresholds', counted)
    return calls


def test_thresholds_checked_once_while_they_stay_the_same(monkeypatch):
    net = _net()
    engine = FastBranchyNet(net)
    calls = _counting(net, monkeypatch)
    x = _x()
    ts = [0.5]  # (calls holds the list itself: the counts are what is asserted)
    first = engine.predict(x, ts)
    for _ in range(3):
        for a, b in zip(engine.predict(x, ts), first):
            numpy.testing.assert_array_equal(a, b)
    engine.predict(x, (0.5,))  # the same numbers as a tuple
    assert len(calls) == 1
    engine.predict(x, [0.25])
    ts[0] = 0.125  # changed in place: checked again (the numbers are kept, not the list)
    engine.predict(x, ts)
    assert len(calls) == 3
    ts[0] = -1.0
    for _ in range(2):  # refused every time: a refused value is not kept
        with pytest.raises(InvalidValue, match='non-negative'):
            engine.predict(x, ts)
    assert len(calls) == 5


def test_thresholds_checked_again_for_another_confidence_measure(monkeypatch):
    net = _net()
    engine = FastBranchyNet(net)
    x = _x()
    engine.predict(x, [2.0])  # an entropy of 2 nats: valid
    net.confidence = 'maxprob'  # probabilities are at most 1
    with pytest.raises(InvalidValue, match=r'\[0, 1\]'):
        engine.predict(x, [2.0])
    net.confidence = 'entropy'
    engine.predict(x, [2.0])
    # another measure object under the same name
    monkeypatch.setitem(confidence.MEASURES, 'entropy', confidence.MEASURES['maxprob'])
    with pytest.raises(InvalidValue, match=r'\[0, 1\]'):
        engine.predict(x, [2.0])


def test_thresholds_returned_as_a_tuple_no_caller_can_change():
    engine = FastBranchyNet(_net())
    ts = engine.resolve_thresholds([0.5])
    assert ts == (0.5,) and engine.resolve_thresholds([0.5]) is ts


@pytest.mark.parametrize('thresholds', [numpy.array([0.5]), 0.5, [numpy.float32(0.5)]],
                         ids=['array', 'scalar', 'numpy_number'])
def test_thresholds_of_other_types_checked_every_call(thresholds, monkeypatch):
    net = _net()
    engine = FastBranchyNet(net)
    calls = _counting(net, monkeypatch)
    for _ in range(2):
        engine.predict(_x(), thresholds)
    assert len(calls) == 2


def _engines(net):
    yield 'chainer', net.chainer_engine(), True
    yield 'fast', FastBranchyNet(net), True
    try:
        from branchynet.engines.onnx_runtime import OnnxBranchyNet
        yield 'onnx', OnnxBranchyNet(net), False
    except ImportError:
        pass
    try:
        from branchynet.engines.numba import NumbaBranchyNet
        yield 'numba', NumbaBranchyNet(net, threads=2), False
    except ImportError:
        pass


def test_predict_enters_test_mode_only_for_engines_that_route_through_chainer(monkeypatch):
    """The Chainer and fast engines route in test mode without backprop;
    ONNX Runtime and numba run their own code without those contexts (a few
    µs a batch), and give ``net.predict``'s answers in the caller's mode."""
    net = _net()
    x = _x()
    with chainer.using_config('train', False):
        expected = net.predict(x, [0.5])
    with chainer.using_config('train', False):
        expected_main = net.predict_main(x)
    for name, engine, contexts in _engines(net):
        seen = []
        for method in ('route', 'main_route'):
            def recording(*args, _run=getattr(engine, method), _method=method):
                seen.append((_method, chainer.config.train, chainer.config.enable_backprop))
                return _run(*args)
            monkeypatch.setattr(engine, method, recording)
        with chainer.using_config('train', True):
            got = engine.predict(x, [0.5])
            got_main = engine.predict_main(x)
        mode = (False, False) if contexts else (True, True)
        assert seen == [('route',) + mode, ('main_route',) + mode], name
        for a, b in zip(got, expected):
            numpy.testing.assert_array_equal(a, b, err_msg=name)
        numpy.testing.assert_array_equal(got_main, expected_main, err_msg=name)
