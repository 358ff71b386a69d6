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


def test_entropy_from_logits_matches_entropy_of_softmax():
    from branchynet.confidence import entropy_from_logits, entropy_from_logits_row
    rng = numpy.random.RandomState(1)
    z = (rng.randn(50, 10) * 8).astype(numpy.float32)
    p = numpy.exp(z - z.max(1, keepdims=True).astype(numpy.float64))
    p /= p.sum(1, keepdims=True)
    numpy.testing.assert_allclose(entropy_from_logits(z), scipy.stats.entropy(p, axis=1),
                                  rtol=1e-9, atol=1e-12)
    rows = [entropy_from_logits_row(r) for r in z.tolist()]
    numpy.testing.assert_allclose(rows, entropy_from_logits(z), rtol=1e-12, atol=1e-14)
    # a saturated row: one logit far above the rest gives (almost) zero entropy
    assert entropy_from_logits(numpy.array([[1000., 0., 0.]]))[0] == 0.0
