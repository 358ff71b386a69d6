"""benchmarks/placement_compare.py: its rank correlation and its --seeds."""
import numpy
import pytest

from tests.helpers import benchmark_module


@pytest.fixture(scope='module')
def bench():
    with benchmark_module('placement_compare') as module:
        yield module


def test_spearman_is_pearson_of_ranks_with_ties_sharing_their_mean_rank(bench):
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # monotone but not linear: still 1
    assert bench.spearman([0.1, 0.2, 0.9, 5.0], [1, 2, 3, 4]) == pytest.approx(1.0)
    # ties: ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3)
    expected = numpy.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1]
    assert bench.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)


def test_spearman_is_nan_where_undefined(bench):
    assert numpy.isnan(bench.spearman([1, 2], [1, 2]))
    assert numpy.isnan(bench.spearman([1, 1, 1], [1, 2, 3]))


def test_seeds_are_parsed_or_refused_in_one_line(bench):
    assert bench.parse_seeds('0,1, 2') == [0, 1, 2]
    for bad in ('', 'a,b', ','):
        with pytest.raises(SystemExit, match='--seeds wants comma-separated whole numbers'):
            bench.parse_seeds(bad)


def test_k_lists_are_parsed_or_refused_in_one_line(bench):
    assert bench.parse_ks('2') == [2] and bench.parse_ks('4, 2') == [2, 4]
    for bad in ('', '0', '2,2', 'two'):
        with pytest.raises(SystemExit, match='--k wants distinct comma-separated whole numbers'):
            bench.parse_ks(bad)
    assert bench.automatic_name(2, [2, 4]) == 'automatic'
    assert bench.automatic_name(4, [2, 4]) == 'automatic, at most 4 exits'
