"""benchmarks/common.py: an engine checked against ``net.predict``."""
import numpy
import pytest

from tests.helpers import benchmark_module

LABELS = numpy.array([3, 1, 4, 1, 5])
EXITS = numpy.array([0, 1, 0, 2, 1])


@pytest.fixture(scope='module')
def common():
    with benchmark_module('common') as module:
        yield module


class Net:
    def predict(self, x, thresholds):
        assert thresholds == [0.5, 1.0]
        return LABELS[x], EXITS[x]


class Engine:
    """``Net``'s answers one sample at a time, with ``flip`` changing the
    label (``'label'``) or the exit (``'exit'``) of sample 2."""

    def __init__(self, flip=None):
        self.flip, self.sizes = flip, []

    def predict(self, x, thresholds):
        self.sizes.append(len(x))
        labels, exits = LABELS[x].copy(), EXITS[x].copy()
        if x[0] == 2 and self.flip == 'label':
            labels += 1
        if x[0] == 2 and self.flip == 'exit':
            exits += 1
        return labels, exits


X = numpy.arange(5)


def test_an_engine_giving_predicts_labels_and_exits_one_by_one_agrees(common):
    engine = Engine()
    assert common.same_as_predict(Net(), engine, X, [0.5, 1.0])
    assert engine.sizes == [1] * len(X)


@pytest.mark.parametrize('flip', ['label', 'exit'])
def test_one_different_label_or_exit_is_a_disagreement(common, flip):
    assert not common.same_as_predict(Net(), Engine(flip), X, [0.5, 1.0])


def test_predicts_answer_given_is_used_instead_of_asking_again(common):
    class Unasked:
        def predict(self, x, thresholds):
            raise AssertionError('net.predict asked although its answer was given')
    want = Net().predict(X, [0.5, 1.0])
    assert common.same_as_predict(Unasked(), Engine(), X, [0.5, 1.0], want)
    assert not common.same_as_predict(Unasked(), Engine('exit'), X, [0.5, 1.0], want)
