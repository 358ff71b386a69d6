"""predict_percent keeps the original's meaning (shares of the whole input)
while computing it in bounded chunks."""
import numpy
import pytest

from branchynet.engines.base import DEFAULT_BATCHSIZE
from branchynet.engines.routing import route_batch_by_share
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net


def _x(n, seed=0):
    return numpy.random.RandomState(seed).randn(n, 1, 8, 8).astype(numpy.float32)


def _whole_batch(net, x, shares):
    """The original's computation: all of ``x`` as one batch."""
    import chainer
    engine = net.chainer_engine()
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return route_batch_by_share(engine.steps, x, shares, numpy)


@pytest.mark.parametrize('percents', [None, 0.3, [0.25, 0.5], [0.0, 0.9], 1.0, 0.0])
def test_shares_are_of_the_whole_input_as_in_one_batch(percents):
    net = make_three_exit_net()
    x = _x(2 * DEFAULT_BATCHSIZE + 300)
    shares = net._shares(net.percentTestExits if percents is None else percents, 'p')
    expected = _whole_batch(net, x, shares)
    labels, exits = net.predict_percent(x, percents)
    numpy.testing.assert_array_equal(exits, expected[1])
    numpy.testing.assert_array_equal(labels, expected[0])


def test_no_pass_sees_more_than_one_chunk(monkeypatch):
    net = make_three_exit_net()
    seen = []
    segment = net.segment

    def recording(h, n):
        seen.append(len(h))
        return segment(h, n)
    monkeypatch.setattr(net, 'segment', recording)
    net.predict_percent(_x(3 * DEFAULT_BATCHSIZE))
    assert seen and max(seen) <= DEFAULT_BATCHSIZE


@pytest.mark.parametrize('batchsize', [0, -4, 2.5])
def test_a_bad_batchsize_is_refused(batchsize):
    with pytest.raises(InputError, match='batchsize must be a positive integer'):
        make_three_exit_net().predict_percent(_x(10), batchsize=batchsize)
