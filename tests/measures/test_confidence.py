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
    from branchynet.measures.confidence import entropy_from_logits, entropy_from_logits_row
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


def test_every_measure_agrees_with_a_direct_computation():
    from branchynet.measures.confidence import MEASURES
    rng = numpy.random.RandomState(2)
    z = (rng.randn(40, 10) * 4).astype(numpy.float32)
    p = numpy.exp(z - z.max(1, keepdims=True).astype(numpy.float64))
    p /= p.sum(1, keepdims=True)
    top2 = numpy.sort(p, axis=1)[:, -2:]
    direct = {'entropy': scipy.stats.entropy(p, axis=1), 'maxprob': 1 - p.max(1),
              'margin': 1 - (top2[:, 1] - top2[:, 0])}
    for name, m in MEASURES.items():
        numpy.testing.assert_allclose(m.scores(z), direct[name], rtol=1e-9, atol=1e-12)
        numpy.testing.assert_allclose([m.row_score(r) for r in z.tolist()], direct[name],
                                      rtol=1e-9, atol=1e-12)


def test_maxprob_and_margin_exit_rules_and_threshold_range():
    import pytest
    from tests.helpers import make_three_exit_net
    net = make_three_exit_net(confidence='maxprob')
    x = numpy.random.RandomState(0).randn(30, 1, 8, 8).astype(numpy.float32)
    z = net.get_logits(x)
    pmax = [numpy.exp(v - v.max(1, keepdims=True)) for v in z]
    pmax = [(q / q.sum(1, keepdims=True)).max(1) for q in pmax]
    t = float(numpy.median(pmax[0]))
    _, exits = net.predict(x, [t, 1.0])
    numpy.testing.assert_array_equal(exits == 0, pmax[0] > t)
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match=r'numbers in \[0, 1\]'):
            net.predict(x, [bad, 0.5])
    net.confidence = 'margin'
    _, exits = net.predict(x, [0.0, 0.0])   # any margin > 0 leaves at exit 1
    assert (exits == 0).all()
    with pytest.raises(ValueError, match="unknown confidence measure 'energy'"):
        net.confidence = 'energy'
