"""branchynet.optimizers: the one-pass Adam gives Chainer's Adam's results to the last bit."""
import numpy
import pytest
from hypothesis import given, settings, strategies as st

import branchynet  # noqa: F401
import chainer
import chainer.links as L

from branchynet import optimizers as adam


def _steps(optimizer_class, shapes, hyper, grads):
    link = chainer.ChainList(*[L.Linear(2, 2) for _ in shapes])  # parameters replaced below
    params = []
    for child, shape in zip(link, shapes):
        child.W = chainer.Parameter(numpy.linspace(-1, 1, int(numpy.prod(shape)),
                                                  dtype=numpy.float32).reshape(shape))
        params.append(child.W)
    optimizer = optimizer_class(**hyper)
    optimizer.setup(link)
    for step in grads:
        link.cleargrads()
        for p, g in zip(params, step):
            p.grad = g.copy()
        optimizer.update()
    rules = [p.update_rule for p in params]
    return [p.array for p in params] + [r.state[k] for r in rules for k in ('m', 'v')], optimizer


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 9)), min_size=1, max_size=3),
       alpha=st.sampled_from([1e-3, 0.1]), beta1=st.sampled_from([0.9, 0.5]),
       beta2=st.sampled_from([0.999, 0.9]), eps=st.sampled_from([1e-8, 1e-3]),
       eta=st.sampled_from([1.0, 0.5]), weight_decay_rate=st.sampled_from([0.0, 1e-2]),
       steps=st.integers(1, 4), scale=st.sampled_from([1e-6, 1.0, 1e4]), seed=st.integers(0, 99))
def test_updates_equal_chainers_bit_for_bit(shapes, alpha, beta1, beta2, eps, eta,
                                            weight_decay_rate, steps, scale, seed):
    rng = numpy.random.RandomState(seed)
    grads = [[(rng.randn(*s) * scale).astype(numpy.float32) for s in shapes]
             for _ in range(steps)]
    hyper = dict(alpha=alpha, beta1=beta1, beta2=beta2, eps=eps, eta=eta,
                 weight_decay_rate=weight_decay_rate)
    ours, optimizer = _steps(adam.Adam, shapes, hyper, grads)
    theirs, _ = _steps(chainer.optimizers.Adam, shapes, hyper, grads)
    assert all(isinstance(p.update_rule, adam.AdamRule) for p in optimizer.target.params())
    assert adam._kernel  # the one-pass update ran
    for a, b in zip(ours, theirs):
        numpy.testing.assert_array_equal(a, b)


def test_amsgrad_goes_to_chainers_update():
    grads = [[numpy.full((2, 3), .5, numpy.float32)]] * 2
    ours, _ = _steps(adam.Adam, [(2, 3)], dict(amsgrad=True), grads)
    theirs, _ = _steps(chainer.optimizers.Adam, [(2, 3)], dict(amsgrad=True), grads)
    for a, b in zip(ours, theirs):
        numpy.testing.assert_array_equal(a, b)


def test_snapshot_keys_are_chainers():
    grads = [[numpy.ones((2, 2), numpy.float32)]]
    _, ours = _steps(adam.Adam, [(2, 2)], {}, grads)
    _, theirs = _steps(chainer.optimizers.Adam, [(2, 2)], {}, grads)
    mine, chainers = {}, {}
    chainer.serializers.DictionarySerializer(mine).save(ours)
    chainer.serializers.DictionarySerializer(chainers).save(theirs)
    assert sorted(mine) == sorted(chainers)


def test_kernels_off_is_chainers_update(monkeypatch):
    from branchynet.links import cpukernels
    calls = []
    monkeypatch.setattr(adam, '_compiled', lambda: calls.append(1))
    with cpukernels.disabled():
        _steps(adam.Adam, [(2, 2)], {}, [[numpy.ones((2, 2), numpy.float32)]])
    assert not calls


def test_a_0d_parameter_updates_as_chainers():
    def run(cls):
        link = chainer.Link()
        with link.init_scope():
            link.s = chainer.Parameter(numpy.array(0.5, numpy.float32))
        opt = cls()
        opt.setup(link)
        for g in (0.3, -0.7, 0.11):
            link.cleargrads()
            link.s.grad = numpy.array(g, numpy.float32)
            opt.update()
        rule = link.s.update_rule
        return [link.s.array, rule.state['m'], rule.state['v']]
    for a, b in zip(run(adam.Adam), run(chainer.optimizers.Adam)):
        numpy.testing.assert_array_equal(a, b)


def _mixed_steps(optimizer_class, hook):
    """Four parameters a step each way can treat differently: one whose rule
    is disabled for the second step (as ``train_main`` does to the heads),
    one with its own learning rate, one float64, one plain; with ``hook``, a
    weight-decay hook on the optimizer (Chainer's per-parameter path)."""
    rng = numpy.random.RandomState(5)
    link = chainer.Link()
    with link.init_scope():
        link.a = chainer.Parameter(rng.randn(3, 4).astype(numpy.float32))
        link.b = chainer.Parameter(rng.randn(5).astype(numpy.float32))
        link.c = chainer.Parameter(rng.randn(2, 2))
        link.d = chainer.Parameter(rng.randn(7).astype(numpy.float32))
    opt = optimizer_class(alpha=0.01)
    opt.setup(link)
    if hook:
        opt.add_hook(chainer.optimizer_hooks.WeightDecay(1e-3))
    link.b.update_rule.hyperparam.alpha = 0.1
    for step in range(3):
        link.cleargrads()
        for p in link.params():
            p.grad = rng.randn(*p.shape).astype(p.dtype)
        link.a.update_rule.enabled = step != 1
        opt.update()
    rules = [p.update_rule for p in (link.a, link.b, link.c, link.d)]
    return ([link.a.array, link.b.array, link.c.array, link.d.array]
            + [r.state[k] for r in rules for k in ('m', 'v')] + [[r.t for r in rules], opt.t])


@pytest.mark.parametrize('hook', [False, True])
def test_the_direct_update_of_mixed_parameters_equals_chainers(hook):
    ours, theirs = _mixed_steps(adam.Adam, hook), _mixed_steps(chainer.optimizers.Adam, hook)
    assert ours[-2:] == theirs[-2:] == [[2, 3, 3, 3], 3]  # each rule's steps, the optimizer's
    for a, b in zip(ours[:-2], theirs[:-2]):
        numpy.testing.assert_array_equal(a, b)


def test_update_skips_chainers_per_parameter_wrapping(monkeypatch):
    """Without hooks or a loss function, no parameter goes through ``UpdateRule.update``."""
    wrapped = []
    original = chainer.UpdateRule.update
    monkeypatch.setattr(chainer.UpdateRule, 'update',
                        lambda self, param: wrapped.append(1) or original(self, param))
    _steps(adam.Adam, [(2, 3), (4,)], {}, [[numpy.ones((2, 3), numpy.float32),
                                            numpy.ones(4, numpy.float32)]] * 2)
    assert not wrapped
    _steps(chainer.optimizers.Adam, [(2, 3)], {}, [[numpy.ones((2, 3), numpy.float32)]])
    assert wrapped  # the spy sees Chainer's own path


def test_is_safe_to_update_after_an_update_as_chainers():
    _, ours = _steps(adam.Adam, [(2, 3)], {}, [[numpy.ones((2, 3), numpy.float32)]])
    assert ours.is_safe_to_update()
