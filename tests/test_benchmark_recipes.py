"""benchmarks/recipes.py: the knee over every distinct exit-1 entropy and
where the errors are at the target share, checked against brute force."""
import numpy
import pytest
from hypothesis import given, settings, strategies as st

from tests.helpers import benchmark_module


@pytest.fixture(scope='module')
def recipes():
    with benchmark_module('recipes') as module:
        yield module


def _case(seed, n):
    rng = numpy.random.RandomState(seed)
    entropy = rng.randint(0, 6, n) / 4.0  # ties, as real entropies have after rounding
    return entropy, rng.rand(n) < 0.8, rng.rand(n) < 0.9


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10 ** 6), st.integers(1, 40))
def test_knee_is_the_largest_share_at_least_as_accurate_as_the_last_exit(recipes, seed, n):
    entropy, first, last = _case(seed, n)
    t, share, acc = recipes.knee(entropy, first, last)
    leave = entropy < t
    assert leave.mean() == share
    assert numpy.where(leave, first, last).mean() == pytest.approx(acc)
    assert acc >= last.mean() - 1e-12
    for t2 in numpy.concatenate([entropy, entropy + 1e-9, [entropy.max() + 1]]):
        leave2 = entropy < t2  # no threshold sends more out at that accuracy
        if leave2.mean() > share:
            assert numpy.where(leave2, first, last).mean() < last.mean()


def test_errors_at_share_counts_each_side_of_the_split(recipes):
    entropy = numpy.array([0.1, 0.5, 0.2, 0.9, 0.3])
    first = numpy.array([True, False, False, True, True])
    last = numpy.array([False, True, True, False, True])
    # 60 %: the three lowest entropies (samples 0, 2, 4) leave at exit 1
    got = recipes.errors_at_share(entropy, first, last, share=0.6)
    assert got == {'share': 0.6, 'exit1_errors': 1, 'last_errors_same_samples': 1,
                   'last_errors_rest': 1}
