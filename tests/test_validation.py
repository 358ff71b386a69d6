"""Every bad input gets an error naming the argument, what was given and what
is expected; predict holds its contract on random valid input (hypothesis)."""
import numpy
import pytest
from hypothesis import given, settings, strategies as st

from branchynet import devices, utils
from networks import lenet_mnist
from tests.helpers import make_three_exit_net

NET = lenet_mnist.get_network()
GOOD = numpy.zeros((2, 1, 28, 28), numpy.float32)


@pytest.mark.parametrize('x, error, match', [
    (numpy.zeros((1, 28, 28), numpy.float32), ValueError,
     r'x must have 4 dimensions \(N, 1, 28, 28\), got shape \(1, 28, 28\)'),
    (numpy.zeros((2, 3, 28, 28), numpy.float32), ValueError,
     r'per-sample shape \(1, 28, 28\).*got \(3, 28, 28\)'),
    (numpy.zeros((2, 1, 32, 32), numpy.float32), ValueError,
     r'per-sample shape \(1, 28, 28\).*got \(1, 32, 32\)'),
    (numpy.zeros((2, 1, 28, 28), numpy.float64), TypeError,
     'x must have dtype float32, got float64'),
    (numpy.zeros((2, 1, 28, 28), numpy.uint8), TypeError, 'x must have dtype float32, got uint8'),
    (numpy.full((2, 1, 28, 28), numpy.nan, numpy.float32), ValueError,
     'x contains NaN or infinite values'),
    (numpy.full((2, 1, 28, 28), numpy.inf, numpy.float32), ValueError,
     'x contains NaN or infinite values'),
    ([[0.0]], TypeError, 'x must be a numpy or cupy array, got list'),
    (numpy.zeros((0, 1, 28, 28), numpy.float32), ValueError, 'x is empty'),
])
def test_bad_inputs(x, error, match):
    with pytest.raises(error, match=match):
        NET.predict(x, 0.1)


@pytest.mark.parametrize('t, error, match', [
    (numpy.array([0, 10], numpy.int32), ValueError,
     r't must be within 0\.\.9, got values from 0 to 10'),
    (numpy.array([-1, 3], numpy.int32), ValueError, r't must be within 0\.\.9, got values from -1'),
    (numpy.array([1, 2, 3], numpy.int32), ValueError, r't must have shape \(2,\).*got \(3,\)'),
    (numpy.array([1.0, 2.0]), TypeError, 't must hold integer labels'),
])
def test_bad_labels(t, error, match):
    net = lenet_mnist.get_network()
    with pytest.raises(error, match=match):
        net.train(GOOD, t)
    with pytest.raises(error, match=match):
        net.train_main(GOOD, t)


def test_a_gpu_requested_where_none_is_usable(monkeypatch, capsys):
    monkeypatch.setattr(devices, 'gpu_usable', lambda: False)
    with pytest.raises(ValueError, match='--device gpu: no CUDA GPU is usable through CuPy'):
        devices.resolve_device('gpu')
    with pytest.raises(ValueError, match='no CUDA GPU is usable'):
        devices.resolve_device('@cupy:0')
    assert devices.resolve_device('auto').xp is numpy
    assert 'no usable GPU; --device auto runs on the CPU' in capsys.readouterr().err


def test_training_arguments():
    with pytest.raises(ValueError, match='batchsize must be >= 1'):
        utils.train_exits(NET, GOOD, numpy.zeros(2, numpy.int32), batchsize=0)


def test_seeded_cpu_training_is_bit_for_bit_reproducible():
    from networks import alex_cifar10  # dropout draws from numpy's global generator
    rng = numpy.random.RandomState(0)
    x = rng.rand(48, 3, 32, 32).astype(numpy.float32)
    y = rng.randint(0, 10, 48).astype(numpy.int32)
    weights = []
    for _ in range(2):
        numpy.random.seed(7)
        net = alex_cifar10.get_network()
        utils.train_exits(net, x, y, main=True, batchsize=16, num_epoch=1, seed=7, progress=False)
        utils.train_exits(net, x, y, batchsize=16, num_epoch=1, seed=8, progress=False)
        weights.append({k: p.array.copy() for k, p in net.namedparams()})
    for k in weights[0]:
        numpy.testing.assert_array_equal(weights[0][k], weights[1][k], err_msg=k)


PROPERTY_NET = make_three_exit_net(seed=11)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 12), batchsize=st.integers(1, 13),
       thresholds=st.lists(st.floats(0, 3, allow_nan=False), min_size=2, max_size=2),
       seed=st.integers(0, 2 ** 16), scale=st.floats(0.01, 100))
def test_predict_contract_on_random_valid_input(n, batchsize, thresholds, seed, scale):
    x = (numpy.random.RandomState(seed).randn(n, 1, 8, 8) * scale).astype(numpy.float32)
    labels, exits = PROPERTY_NET.predict(x, thresholds, batchsize=batchsize)
    assert labels.shape == exits.shape == (n,)
    assert labels.dtype == exits.dtype == numpy.int32
    assert ((0 <= labels) & (labels < 5)).all() and ((0 <= exits) & (exits < 3)).all()
    one = [PROPERTY_NET.predict(x[i:i + 1], thresholds) for i in range(n)]
    numpy.testing.assert_array_equal(labels, [o[0][0] for o in one])
    numpy.testing.assert_array_equal(exits, [o[1][0] for o in one])


def test_a_message_about_a_huge_input_stays_short():
    """A million thresholds named in full made a 5 MB error line."""
    from branchynet.validation import InputError, validate_thresholds
    with pytest.raises(InputError, match=r'got 1000000 value\(s\): \[0.0, 0.0, .*, \.\.\.\]$') \
            as info:
        validate_thresholds([0.0] * 10 ** 6, 2)
    assert len(str(info.value)) < 300
