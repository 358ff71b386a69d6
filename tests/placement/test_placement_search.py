"""The exit-set search against a constructed case whose optimum is known."""
import itertools

import numpy
import pytest

from branchynet.placement import fixed_fraction_points, search
from branchynet.placement.timing import CostModel
from branchynet.placement.trunk import Trunk
from branchynet.validation import InputError, InvalidValue
from tests.placement.placement_nets import one_exit_net

N = 100
#: which samples each probe gets right (with a low entropy); wrong ones get a high one
RIGHT = {10: range(30), 20: range(60), 30: range(90)}
MODEL = CostModel(prefix_ms={10: 1.0, 20: 2.0, 30: 3.2}, head_ms={10: .5, 20: .5, 30: .5},
                  main_ms=5.0)


def _case():
    y = numpy.zeros(N, numpy.int32)
    outputs = {}
    for p, right in RIGHT.items():
        ok = numpy.zeros(N, bool)
        ok[list(right)] = True
        outputs[p] = (numpy.where(ok, 0.1, 1.0), numpy.where(ok, 0, 1).astype(numpy.int32))
    final = (numpy.full(N, 0.5), numpy.zeros(N, numpy.int32))
    return outputs, final, y


def _brute_force(outputs, final, y, k, target_acc=None, budget=None):
    """Every set and every distinct exit decision (nobody, the confident ones,
    everybody), priced sample by sample: the true optimum."""
    best = None
    for r in range(k + 1):
        for pts in itertools.combinations(sorted(outputs), r):
            path = MODEL.path_ms(list(pts))
            for limits in itertools.product((0.0, 0.5, numpy.inf), repeat=r):
                cost = right = 0
                for i in range(N):
                    exit_ = next((j for j, (p, t) in enumerate(zip(pts, limits))
                                  if outputs[p][0][i] < t), r)
                    pred = outputs[pts[exit_]][1][i] if exit_ < r else final[1][i]
                    cost += path[exit_]
                    right += pred == y[i]
                acc, ms = right / N, cost / N
                ok = ms <= budget + 1e-9 if budget is not None else acc >= target_acc - 1e-9
                key = (not ok, -acc, ms) if budget is not None else (not ok, ms, -acc)
                if best is None or key < best[0]:
                    best = (key, list(pts), acc, ms)
    return best[1:]


@pytest.mark.parametrize('k, expected, ms', [(1, [20], 3.7), (2, [20, 30], 3.36)])
def test_exhaustive_search_finds_the_known_optimum(k, expected, ms):
    outputs, final, y = _case()
    best, evaluated = search.choose(sorted(outputs), outputs, final, y, MODEL.path_ms, k=k,
                                    target_acc=1.0, progress=False)
    assert best['points'] == expected and best['met']
    assert best['ms'] == pytest.approx(ms) and best['acc'] == 1.0
    assert len(evaluated) == sum(len(list(itertools.combinations(range(3), r)))
                                 for r in range(k + 1))
    assert list(_brute_force(outputs, final, y, k, target_acc=1.0)) == [expected, 1.0,
                                                                        pytest.approx(ms)]


@pytest.mark.parametrize('budget', [2.0, 3.0, 4.5])
def test_budget_search_equals_brute_force(budget):
    outputs, final, y = _case()
    best, _ = search.choose(sorted(outputs), outputs, final, y, MODEL.path_ms, k=2,
                            budget=budget, progress=False)
    pts, acc, ms = _brute_force(outputs, final, y, 2, budget=budget)
    assert best['acc'] == pytest.approx(acc) and best['ms'] <= budget + 1e-9
    assert best['ms'] == pytest.approx(ms) or best['points'] == pts


def test_more_exits_than_two_are_searched_exhaustively_where_affordable():
    outputs, final, y = _case()
    assert search.strategy(3, 3) == 'exhaustive' and search.set_count(3, 3) == 8
    three, evaluated = search.choose(sorted(outputs), outputs, final, y, MODEL.path_ms, k=3,
                                     target_acc=1.0, progress=False)
    assert len(evaluated) == 8
    pts, acc, ms = _brute_force(outputs, final, y, 3, target_acc=1.0)
    assert three['points'] == pts and three['ms'] == pytest.approx(ms) and acc == 1.0


def test_greedy_search_starts_from_the_best_pair_and_is_no_worse(monkeypatch):
    outputs, final, y = _case()
    two, pairs = search.choose(sorted(outputs), outputs, final, y, MODEL.path_ms, k=2,
                               target_acc=1.0, progress=False)
    monkeypatch.setattr(search, 'EXHAUSTIVE_SETS', 0)
    assert search.strategy(3, 3) == 'greedy' and search.strategy(3, 2) == 'exhaustive'
    three, evaluated = search.choose(sorted(outputs), outputs, final, y, MODEL.path_ms, k=3,
                                     target_acc=1.0, progress=False)
    assert [r['points'] for r in evaluated[:len(pairs)]] == [r['points'] for r in pairs]
    assert [r['points'] for r in evaluated[len(pairs):]] == [[10, 20, 30]]  # one step from [20, 30]
    assert three['met'] and three['ms'] <= two['ms'] + 1e-9
    assert search.best_within(evaluated, 2)['points'] == two['points']


def test_best_within_picks_among_the_small_enough_sets():
    outputs, final, y = _case()
    _, evaluated = search.choose(sorted(outputs), outputs, final, y, MODEL.path_ms, k=2,
                                 target_acc=1.0, progress=False)
    assert search.best_within(evaluated, 0)['points'] == []
    assert search.best_within(evaluated, 1)['points'] == [20]
    assert search.best_within(evaluated, 2)['points'] == [20, 30]
    with pytest.raises(InvalidValue, match='no priced exit set has at most 1 exits'):
        search.best_within([r for r in evaluated if len(r['points']) == 2], 1)


def test_no_early_exit_when_none_pays():
    outputs, final, y = _case()
    dear = CostModel({p: 6.0 for p in RIGHT}, {p: 1.0 for p in RIGHT}, 5.0)
    best, _ = search.choose(sorted(outputs), outputs, final, y, dear.path_ms, k=2,
                            target_acc=1.0, progress=False)
    assert best['points'] == [] and best['ms'] == 5.0


def test_candidates_and_fixed_fractions():
    trunk = Trunk.of(one_exit_net())
    cands = search.candidate_points(trunk)
    assert cands and all(0.02 <= trunk.share(b) <= 0.9 for b in cands)
    macs = trunk.describe()['macs']
    assert len({macs[b] for b in cands}) == len(cands)  # one per distinct MAC count
    every = search.candidate_points(trunk, distinct=False)
    assert set(cands) <= set(every)
    sdn = fixed_fraction_points(trunk)
    assert sdn == sorted(set(sdn)) and all(1 <= b < len(trunk.layers) for b in sdn)
    shares = [trunk.share(b) for b in trunk.boundaries()]
    for f in search.SDN_FRACTIONS:  # the nearest boundary to each fraction is among them
        nearest = trunk.boundaries()[int(numpy.argmin([abs(s - f) for s in shares]))]
        assert nearest in sdn
    with pytest.raises(InputError, match='min_share'):
        search.candidate_points(trunk, min_share=0.95, max_share=0.9)


def test_the_exhaustive_part_grows_as_far_as_the_set_limit_allows():
    # 12 candidates: 299 sets of at most 3 exits, 794 of at most 4 (limit 512)
    assert search.set_count(12, 3) == 299 and search.set_count(12, 4) == 794
    assert search.exhaustive_depth(12, 3) == 3 and search.strategy(12, 3) == 'exhaustive'
    assert search.exhaustive_depth(12, 4) == 3 and search.strategy(12, 4) == 'greedy'
    # 40 candidates: more than 512 pairs, but k <= 2 is always exhaustive
    assert search.exhaustive_depth(40, 2) == 2 and search.strategy(40, 2) == 'exhaustive'
    assert search.exhaustive_depth(40, 5) == 2
    assert search.exhaustive_depth(3, 9) == 3 and search.strategy(3, 9) == 'exhaustive'
