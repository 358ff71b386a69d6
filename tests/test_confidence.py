import numpy
import scipy.stats

from branchynet import entropy


def test_entropy_matches_scipy_on_random_distributions():
    rng = numpy.random.RandomState(0)
    p = rng.dirichlet(numpy.ones(10) * 0.3, size=200)
    numpy.testing.assert_allclose(entropy(p), scipy.stats.entropy(p, axis=1), rtol=1e-10)


def test_entropy_handles_exact_zeros():
    p = numpy.array([[1., 0., 0.], [0.5, 0.5, 0.], [0., 0., 1.]], dtype=numpy.float32)
    h = entropy(p)
    assert numpy.all(numpy.isfinite(h))
    numpy.testing.assert_allclose(h, [0., numpy.log(2), 0.], atol=1e-7)
    numpy.testing.assert_allclose(h, scipy.stats.entropy(p.T), atol=1e-6)


def test_entropy_is_in_nats_and_maximal_for_uniform():
    p = numpy.full((1, 10), 0.1)
    numpy.testing.assert_allclose(entropy(p), [numpy.log(10)])
