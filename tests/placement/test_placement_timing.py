"""The cost model's two ways of measurement: the shared network's algebra, and
what each way builds (no timing is asserted: these machines are noisy)."""
import pytest

import branchynet.placement.timing as timing
from branchynet.placement.attach import make_heads
from branchynet.placement.trunk import Trunk
from branchynet.validation import InputError
from tests.placement.placement_nets import data, one_exit_net


def test_shared_prefixes_take_every_earlier_head_off_the_forced_time():
    # a shared network whose prefixes are 1, 3, 4 ms and heads 0.5, 0.25, 1 ms:
    # forced out at head n it runs prefix n and heads 1..n
    points, prefix, head = [2, 5, 7], {2: 1., 5: 3., 7: 4.}, {2: .5, 5: .25, 7: 1.}
    forced = [prefix[2] + .5, prefix[5] + .75, prefix[7] + 1.75, 99.]
    assert timing.shared_prefixes(points, forced, head) == prefix


def test_shared_prefixes_are_cut_at_zero_and_never_decrease():
    got = timing.shared_prefixes([1, 2, 3], [0.2, 0.9, 1.3], {1: 0.5, 2: 0.1, 3: 0.1})
    assert got == {1: 0., 2: pytest.approx(0.3), 3: pytest.approx(0.6)}
    noisy = timing.shared_prefixes([1, 2], [2.0, 1.5], {1: 0., 2: 0.})
    assert noisy == {1: 2.0, 2: 2.0}


@pytest.mark.parametrize('method,n,engine,batchsize,expected', [
    ('auto', timing.SHARED_FROM - 1, 'numba', 1, 'per_point'),
    ('auto', timing.SHARED_FROM, 'numba', 1, 'shared'),
    ('auto', 100, 'fast', 1, 'per_point'),
    ('auto', 100, 'numba', 64, 'per_point'),
    ('per_point', 100, 'numba', 1, 'per_point'), ('shared', 1, 'numba', 1, 'shared')])
def test_auto_shares_one_network_from_many_boundaries_on_numba_at_batch_1(
        method, n, engine, batchsize, expected):
    assert timing.chosen_method(method, n, engine, batchsize) == expected


@pytest.mark.parametrize('engine,batchsize', [('fast', 1), ('onnx', 1), ('numba', 8)])
def test_shared_is_refused_off_numba_or_above_batch_1(engine, batchsize):
    with pytest.raises(InputError, match="cost_model='shared' times each head alone on numba"):
        timing.chosen_method('shared', 20, engine, batchsize)


def test_shared_prefixes_refuse_points_out_of_order():
    with pytest.raises(InputError, match='points must increase'):
        timing.shared_prefixes([3, 2], [1., 2.], {2: 0., 3: 0.})


def test_an_unknown_method_is_refused_by_name():
    with pytest.raises(InputError, match="one of auto, per_point, shared, got 'each'"):
        timing.chosen_method('each', 3)


@pytest.mark.parametrize('method,engine', [('per_point', 'fast'), ('shared', 'numba')])
def test_both_methods_price_every_boundary_and_every_head(method, engine, monkeypatch):
    if engine == 'numba':
        pytest.importorskip('numba')
    built = []
    real_build = Trunk.build
    monkeypatch.setattr(Trunk, 'build', lambda self, pts, *a, **k: built.append(list(pts)) or
                        real_build(self, pts, *a, **k))
    x, _ = data(40)
    trunk = Trunk.of(one_exit_net())
    points = [2, 3, 5, 8]
    _, heads, _ = make_heads(trunk, points, 'auto', 0.5)
    model = timing.measure_cost_model(trunk, points, heads, x[:12], engine, 1, 1, False,
                                      method)
    assert sorted(model.prefix_ms) == sorted(model.head_ms) == points
    assert all(v >= 0 for v in list(model.prefix_ms.values()) + list(model.head_ms.values()))
    assert [model.prefix_ms[p] for p in points] == sorted(model.prefix_ms.values())
    assert model.main_ms > 0 and len(model.path_ms([3, 8])) == 3
    # one network per boundary, or one holding every head
    assert built == ([[p] for p in points] if method == 'per_point' else [points])
    assert model.method == method and model.as_dict()['method'] == method


def test_a_head_starting_with_the_trunks_next_layer_is_timed_one_network_per_boundary():
    """A head alone would pay for a layer that, inside the network, the trunk
    computes for it (``BranchyNet.shared_prefix``): no shared network then."""
    pytest.importorskip('numba')
    import chainer.functions as F
    from branchynet import FL
    x, _ = data(20)
    trunk = Trunk.of(one_exit_net())
    points = [3, 4]  # trunk layer 4 (index 3) is a convolution, layer 5 (index 4) a ReLU
    _, heads, _ = make_heads(trunk, points, 'auto', 0.5)
    heads[1] = [FL(F.relu)] + list(heads[1])
    assert trunk.build(points, heads).shared_prefix[:2] == [0, 1]
    model = timing.measure_cost_model(trunk, points, heads, x[:8], 'numba', 1, 1, False,
                                      'shared')
    assert model.method == 'per_point' and sorted(model.prefix_ms) == points
