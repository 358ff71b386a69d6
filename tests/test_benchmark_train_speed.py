"""benchmarks/train_speed.py: ratios between settings taken round by round."""
import pytest

from tests.helpers import benchmark_module


@pytest.fixture(scope='module')
def train_speed():
    with benchmark_module('train_speed') as module:
        yield module


def test_round_ratios_pair_each_round_with_its_own_reference(train_speed):
    # the host halves its speed in round 2: both sides slow, the ratio holds
    median, fastest, slowest = train_speed.round_ratios([10., 20., 11.], [12., 24., 11.])
    assert (fastest, slowest) == pytest.approx((10 / 12, 1.0))
    assert median == pytest.approx(10 / 12)
