"""Samples whose logits are not finite are refused by name on every engine.

Finite inputs of 3e38 overflow inside the network (NaN or infinite logits).
Before the fix every engine answered label 0 at the last exit for them,
without a word.
"""
import numpy
import pytest

from branchynet.engines import fast as fastpath, onnx_runtime as onnxpath
from branchynet.engines import numba as numbapath
from branchynet.engines.routing import NonFiniteLogits
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net

ENGINES = {
    'chainer': lambda net: net,
    'fast': fastpath.FastBranchyNet,
    'onnx': onnxpath.OnnxBranchyNet,
    'numba': numbapath.NumbaBranchyNet,
}


@pytest.fixture(scope='module')
def net():
    return make_three_exit_net()


@pytest.fixture(scope='module')
def x():
    x = numpy.random.RandomState(0).rand(20, 1, 8, 8).astype(numpy.float32)
    x[3] = 3e38
    x[11] = -3e38
    return x


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.parametrize('name', sorted(ENGINES))
@pytest.mark.parametrize('call', ['predict', 'predict_batch1', 'predict_main'])
def test_non_finite_logits_are_refused_naming_the_samples(net, x, name, call):
    engine = ENGINES[name](net)
    run = {'predict': lambda: engine.predict(x, [0.5, 0.5]),
           'predict_batch1': lambda: engine.predict(x, [0.5, 0.5], batchsize=1),
           'predict_main': lambda: engine.predict_main(x)}[call]
    with pytest.raises(NonFiniteLogits, match=r'2 of 20 samples .* sample indices 3, 11;'):
        run()
    assert issubclass(NonFiniteLogits, InputError)


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_predict_percent_refuses_non_finite_logits(net, x):
    with pytest.raises(NonFiniteLogits, match='sample indices 3, 11;'):
        net.predict_percent(x, 0.5)


@pytest.mark.parametrize('name', sorted(ENGINES))
def test_finite_logits_still_route_every_sample(net, x, name):
    good = numpy.delete(x, [3, 11], axis=0)
    labels, exits = ENGINES[name](net).predict(good, [0.5, 0.5])
    assert (labels >= 0).all() and (exits >= 0).all()


@pytest.mark.parametrize('call', ['compile_engine', 'NumbaBranchyNet'])
def test_numba_refuses_what_is_not_a_network(call):
    with pytest.raises(InputError, match='must be a BranchyNet'):
        getattr(numbapath, call)(None)
