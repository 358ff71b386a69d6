"""Heads trained on a frozen trunk: every sample seen, the activation cache within cache_bytes."""
import tracemalloc

import numpy
import pytest

import branchynet.placement.heads as heads_mod
from branchynet.placement import Trunk
from branchynet.placement.attach import make_heads
from tests.placement.placement_nets import data, one_exit_net

POINTS = [3, 6]


def _train(x, y, cache_bytes, epochs=2, batchsize=16, seed=3):
    trunk = Trunk.of(one_exit_net())
    _, links, _ = make_heads(trunk, POINTS, 'linear')
    hist = heads_mod.train_heads(trunk, POINTS, links, x, y, epochs=epochs,
                                 batchsize=batchsize, seed=seed, cache_bytes=cache_bytes,
                                 progress=False)
    return hist, links


def _per_sample():
    return heads_mod.feature_bytes(Trunk.of(one_exit_net()), POINTS)


@pytest.mark.parametrize('fit, features', [(None, 'cached'), (20, 'cached and streamed'),
                                           (0, 'streamed')])
def test_every_sample_is_seen_and_the_cache_stays_within_cache_bytes(fit, features):
    """Whatever part of the activations fits in cache_bytes, every head sees
    every sample in every epoch, the cache holds at most cache_bytes, and
    the heads learn exactly what they learn with everything cached."""
    x, y = data(64)
    per = _per_sample()
    cache_bytes = heads_mod.CACHE_BYTES if fit is None else fit * per + per // 2
    hist, links = _train(x, y, cache_bytes)
    reference, ref_links = _train(x, y, heads_mod.CACHE_BYTES)
    assert hist['features'] == features and hist['seen'] == [64, 64]
    assert hist['cached_samples'] == (64 if fit is None else fit)
    assert hist['cached_samples'] + hist['streamed_samples'] == 64
    assert hist['cached'] == (fit is None)
    assert hist['cache_nbytes'] == hist['cached_samples'] * per <= cache_bytes
    for head, ref in zip(links, ref_links):
        for a, b in zip(head, ref):
            for p, q in zip(a.params(), b.params()):
                numpy.testing.assert_array_equal(p.array, q.array)
    assert hist['loss'] == reference['loss']


def test_cached_sample_count_never_exceeds_the_budget():
    trunk, per = Trunk.of(one_exit_net()), _per_sample()
    assert heads_mod.cached_sample_count(trunk, POINTS, 100, float('inf')) == 100
    assert heads_mod.cached_sample_count(trunk, POINTS, 100, 100 * per) == 100
    assert heads_mod.cached_sample_count(trunk, POINTS, 100, 100 * per - 1) == 99
    assert heads_mod.cached_sample_count(trunk, POINTS, 100, per - 1) == 0
    assert heads_mod.cached_sample_count(trunk, POINTS, 100, 0) == 0


def test_memory_held_stays_bounded_when_the_activations_do_not_fit():
    """With a small cache_bytes the peak memory of training does not grow
    with the activations of the whole set (which it does when they are all
    cached). The peaks also hold a batch's transient arrays (convolution
    buffers: about 5 MB for 256 samples here)."""
    x, y = data(4000)
    full = 4000 * _per_sample()  # 5.6 MB
    cache_bytes = 100_000
    _train(x[:40], y[:40], 0, epochs=1)  # one-time allocations (imports, caches) outside

    def peak(limit):
        tracemalloc.start()
        try:
            hist, _ = _train(x, y, limit, epochs=1, batchsize=32)
            return hist, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    hist, small = peak(cache_bytes)
    assert hist['seen'] == [4000] and hist['cache_nbytes'] <= cache_bytes
    _, everything = peak(heads_mod.CACHE_BYTES)
    assert everything >= full
    assert small < full / 2
