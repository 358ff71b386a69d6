"""benchmarks/train_profile.py: exclusive times per layer kind and pass."""
import time

import pytest

from tests.helpers import benchmark_module


@pytest.fixture(scope='module')
def train_profile():
    with benchmark_module('train_profile') as module:
        yield module


def test_nested_time_counts_once_where_it_was_spent(train_profile):
    ticks = iter([0.0, 1.0, 4.0, 10.0])  # outer in at 0, inner 1..4, outer out at 10
    timer = train_profile.PassTimer(lambda: next(ticks))
    timer.enter(('convolution', 'backward-weight'))
    timer.enter(timer.inside_backward() or ('relu', 'forward'))
    timer.leave()
    timer.leave()
    assert timer.totals == {('convolution', 'backward-weight'): 10.0}
    ticks = iter([0.0, 1.0, 4.0, 10.0])
    timer = train_profile.PassTimer(lambda: next(ticks))
    timer.enter(('batch normalisation', 'forward'))
    timer.enter(('relu', 'forward'))
    timer.leave()
    timer.leave()
    assert timer.totals == {('batch normalisation', 'forward'): 7.0, ('relu', 'forward'): 3.0}


def test_a_profile_splits_the_convolutions_and_adds_up(train_profile, monkeypatch):
    from branchynet.links import cpukernels, directconv
    # restored after the test: the profile patches these
    monkeypatch.setattr(directconv, 'backward_data', directconv.backward_data)
    monkeypatch.setattr(cpukernels.Convolution2DCPU, '_input_gradient',
                        cpukernels.Convolution2DCPU._input_gradient)
    train_profile.time_convolution_parts(train_profile.Forwarding())
    out = train_profile.profile('lenet_mnist', 16, 1, time.perf_counter)
    # Chainer's functions: its convolution backward's two nodes split the same way
    chainer_out = train_profile.profile('lenet_mnist', 16, 1, time.perf_counter, kernels=False)
    for step in ('main', 'joint'):
        assert ('convolution', 'backward-data') in chainer_out[step][0]
        parts, total = out[step]
        assert {('convolution', p) for p in ('forward', 'backward-data', 'backward-weight')} \
            <= set(parts)
        assert sum(parts.values()) == pytest.approx(total)
        assert all(v >= 0 for k, v in parts.items() if k[0] != 'rest of the step')
