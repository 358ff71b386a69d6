"""Automatic placement on a tiny network: a valid BranchyNet, engines that agree, a report."""
import json
import os

import numpy
import pytest

from branchynet.engines.fast import FastBranchyNet
from branchynet.placement import attach_exits, place_exits
from branchynet.validation import InputError
from tests.helpers import assert_engine_matches_predict
from tests.placement.placement_nets import data, one_exit_net


def _trained():
    """The tiny network with its final classifier trained a little (heads only: quick)."""
    x, y = data(300)
    net = one_exit_net()
    return net, x, y


def _place(**kwargs):
    net, x, y = _trained()
    kwargs = dict(dict(engine='fast', timing_samples=30, timing_repeats=1, probe_epochs=2,
                       n_probe=200, check_configs=2, x_test=x[250:], y_test=y[250:],
                       compare={'hand': [3, 8]}, log=None, progress=False), **kwargs)
    return place_exits(net, x[:200], y[:200], x[200:250], y[200:250], **kwargs)


def test_placement_returns_a_branchynet_and_a_report(tmp_path):
    net, report = _place()
    chosen = report['chosen']['points']
    assert net.branch_points[:-1] == chosen and len(chosen) <= 2
    assert net.numexits() == len(chosen) + 1
    cands = [c['point'] for c in report['candidates']]
    assert set(chosen) <= set(cands)
    for c in report['candidates']:
        assert 0.02 <= c['mac_share'] <= 0.9 and 0 <= c['probe_acc'] <= 1
        assert c['predicted_ms'] > 0
    assert {'main network', 'fixed fractions (SDN)', 'hand'} <= set(report['baselines'])
    assert report['additivity'] and all(
        len(a['predicted_ms']) == len(a['measured_ms']) for a in report['additivity'])
    assert 0 <= report['chosen']['measured_acc'] <= 1 and report['chosen']['measured_ms'] > 0
    paths = report.save(str(tmp_path), 'tiny')
    assert all(os.path.getsize(p) > 0 for p in paths)
    assert json.load(open(paths[1]))['chosen']['points'] == chosen
    assert '| boundary |' in report.markdown()


def test_placement_with_a_shared_timing_network_reports_it_and_checks_its_sums():
    pytest.importorskip('numba')
    net, report = _place(cost_model='shared', engine='numba', k=1)
    assert report['settings']['cost_model'] == 'shared'
    assert report['additivity'] and all(a['measured_ms'] for a in report['additivity'])
    assert net.branch_points[:-1] == report['chosen']['points']


def test_placed_network_runs_the_same_on_every_engine():
    net, x, y = _trained()
    placed = attach_exits(net, [3, 8], x, y, epochs=1)  # a fixed set: two early exits for sure
    assert_engine_matches_predict(FastBranchyNet(placed), placed, x[:24])
    from branchynet.engines.onnx_runtime import OnnxBranchyNet
    assert_engine_matches_predict(OnnxBranchyNet(placed), placed, x[:24])
    chosen, _ = _place(k=1)
    if chosen.numexits() > 1:
        assert_engine_matches_predict(FastBranchyNet(chosen), chosen, x[:24])


@pytest.mark.slow
def test_placement_on_the_numba_engine_agrees_with_predict():
    from branchynet.engines.numba import compile_engine
    net, report = _place(engine='numba')
    x, _ = data(24, seed=5)
    if net.numexits() > 1:
        assert_engine_matches_predict(compile_engine(net), net, x)
    assert report['settings']['engine'] == 'numba'


def test_jointly_trained_probes_leave_the_given_trunk_and_the_chosen_network_alone():
    """probe_joint_epochs trains a copy: the network given keeps its weights,
    the chosen network's trunk and final exit are the given network's, and
    the probe outputs the search saw differ from the frozen probes'."""
    net, x, y = _trained()
    before = {name: p.array.copy() for name, p in net.namedparams()}
    frozen_net, frozen = _place()
    joint_net, joint = _place(probe_joint_epochs=1, k=0)
    assert all(numpy.array_equal(p.array, before[name]) for name, p in net.namedparams())
    assert joint['settings']['probe_joint_epochs'] == 1
    # the network's target stays the given final exit's held-out accuracy;
    # the search asks the copy for the same loss from its own final exit
    given = float((net.predict_main(x[200:250]) == y[200:250]).mean())
    assert joint['settings']['target_acc'] == pytest.approx(given)
    assert frozen['settings']['search_target_acc'] == frozen['settings']['target_acc']
    assert frozen['settings']['probe_joint_epochs'] == 0
    acc = {c['point']: c['probe_acc'] for c in frozen['candidates']}
    assert any(c['probe_acc'] != acc[c['point']] for c in joint['candidates'])
    x_eval = x[250:]
    assert numpy.array_equal(joint_net.predict_main(x_eval), net.predict_main(x_eval))


@pytest.mark.parametrize('kwargs, words', [
    ({'engine': 'tensorrt'}, 'engine must be one of'),
    ({'k': -1}, 'k must be a whole number'),
    ({'probe_joint_epochs': -1}, 'probe_joint_epochs must be a whole number'),
    ({'batchsize': 0}, 'batchsize must be'),
    ({'cost_model': 'each'}, 'cost model method must be one of'),
    ({'cost_model': 'shared', 'engine': 'fast'}, "cost_model='shared' times each head"),
    ({'min_share': 0.95, 'max_share': 0.99}, 'no layer boundary'),
    ({'target_acc': 0.9, 'budget': 1.0}, 'not both'),
    ({'compare': {'hand': [99]}}, 'boundaries'),
    ({'x_test': numpy.zeros((3, 1, 8, 8), numpy.float32), 'y_test': None}, 'together'),
    ({'x_test': numpy.zeros((3, 1, 8, 8), numpy.float32)}, 'y_test'),
])
def test_bad_input_gets_one_clear_line(kwargs, words):
    with pytest.raises(InputError) as e:
        _place(**kwargs)
    assert words in str(e.value) and '\n' not in str(e.value)


def test_probes_see_every_sample_of_n_probe_under_a_small_cache(monkeypatch):
    """A cache_bytes far below the probes' activations does not shrink the
    probe subset: the probes (and the jointly trained copy) see all n_probe
    samples, the cache holds at most cache_bytes, the log says so, and the
    probes come out as with everything cached."""
    import branchynet.placement.heads as heads_mod
    import branchynet.placement.place as place_mod
    seen = {}
    train_heads, train_exits = heads_mod.train_heads, place_mod.loop.train_exits

    def spy_heads(*args, **kwargs):
        seen['heads'] = hist = train_heads(*args, **kwargs)
        return hist

    def spy_exits(net, x, *args, **kwargs):
        seen['joint'] = len(x)
        return train_exits(net, x, *args, **kwargs)

    monkeypatch.setattr(heads_mod, 'train_heads', spy_heads)
    monkeypatch.setattr(place_mod.loop, 'train_exits', spy_exits)
    lines = []
    _, big = _place(k=1, check_configs=0)
    _, small = _place(k=1, check_configs=0, cache_bytes=20_000, probe_joint_epochs=1,
                      log=lines.append)
    hist = seen['heads']
    assert hist['features'] == 'cached and streamed' and hist['seen'] == [200, 200]
    assert 0 < hist['cached_samples'] < 200 and hist['cache_nbytes'] <= 20_000
    assert seen['joint'] == 200
    assert small['settings']['n_probe'] == 200
    assert small['settings']['probe_cached_samples'] == hist['cached_samples']
    assert small['settings']['probe_features'] == 'cached and streamed'
    assert big['settings']['probe_features'] == 'cached'
    text = '\n'.join(lines)
    assert 'on 200 training samples' in text and 'saw all 200 samples in each of its 2 epochs' \
        in text and 'streamed' in text and 'jointly on the 200 samples' in text
    _, small_frozen = _place(k=1, check_configs=0, cache_bytes=20_000)
    assert [c['probe_acc'] for c in small_frozen['candidates']] == \
        [c['probe_acc'] for c in big['candidates']]
    assert 'streamed' in small_frozen.markdown()
