"""Automatic exit placement in one call: ``place_exits``.

1. Candidates: every layer boundary between ``min_share`` and ``max_share``
   of the main network's multiply-adds (``search.candidate_points``).
2. A head per candidate from the family (``heads``), sized by
   ``head_budget`` times the MACs its exit saves, trained as a *probe* on the
   frozen trunk's activations of a random subset of at most ``n_probe``
   training samples, all candidates at once, every sample in every epoch.
   The activations of as many of those samples as fit in ``cache_bytes`` are
   cached, the others' recomputed each epoch (streamed); the log says which
   and how many samples the probes saw. With ``probe_joint_epochs`` > 0, a
   copy of the trunk with every probe is then trained jointly on the same
   subset, all of it, for that many epochs: exits that will
   be trained jointly afterwards reach more accuracy than heads on a frozen
   trunk, and a search on frozen probes alone can find that no exit meets
   the target (B-LeNet on MNIST, 3 seeds: none chosen).
3. Every probe's and the final exit's outputs on the held-out set (one
   trunk pass per batch, nothing cached; the jointly trained copy's where
   there is one).
4. The cost model (``timing``): each candidate's prefix and head time on the
   engine named, at the batch size asked (one network per candidate, or,
   with many candidates, one network holding every probe).
5. The choice (``search.choose``): at most ``k`` exits and their thresholds,
   the least expected time at ``target_acc`` (default: the final exit's
   held-out accuracy) or the best accuracy within ``budget`` ms.
6. The network: the trunk with the chosen probe heads (trained further on
   all of ``x_train`` for ``head_epochs``, if > 0), thresholds calibrated
   on the held-out set on that engine (``BranchyNet.calibrate``), then
   measured end to end on ``x_test`` (else on the held-out set, said so);
   the cost model's sum checked against real networks (``check_additivity``).
"""
import numpy

import branchynet.placement.heads as heads_mod
from branchynet.measures import confidence
import branchynet.placement.search as search
import branchynet.placement.timing as timing
from branchynet.placement.attach import make_heads
from branchynet.placement.report import PlacementReport
from branchynet.placement.trunk import Trunk
from branchynet.progress import on_terminal
from branchynet.training import loop
from branchynet.validation import InvalidValue, as_labels, validate_inputs


def _outputs(logits, measure):
    m = confidence.get_measure(measure)
    return m.scores(logits), logits.argmax(axis=1).astype(numpy.int32)


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidValue('{} must be a whole number >= {}, got {!r}'.format(
            name, minimum, value))


def _measure_net(net, engine_name, x, y, batchsize, repeats):
    """Accuracy and median ms per sample of ``net`` with its thresholds, on the engine."""
    eng = timing.make_engine(net, engine_name)
    ts = list(net.thresholdExits)
    ms = timing.time_settings(eng, {'b': lambda xb: eng.route(xb, ts)}, x, batchsize,
                              repeats)['b']
    labels, exits = eng.predict(x, ts)
    counts = numpy.bincount(exits, minlength=net.numexits())
    return float((labels == y).mean()), ms, counts.tolist()


def place_exits(network, x_train, y_train, x_val, y_val, k=2, target_acc=None, budget=None,
                engine='numba', batchsize=1, heads='auto', head_budget=heads_mod.HEAD_BUDGET,
                min_share=0.02, max_share=0.9, n_probe=4096, probe_epochs=3,
                probe_joint_epochs=0, head_epochs=0, cache_bytes=heads_mod.CACHE_BYTES,
                timing_samples=200, timing_repeats=3, x_test=None, y_test=None, compare=None,
                measure='entropy', candidates=32, check_configs=3, cost_model='auto', seed=0,
                input_shape=None, final_layers=1, drop_early_exits=False, progress=None,
                log=print):
    """Exits placed where they pay on a trained ``network``; see the module.

    ``network`` and ``input_shape``, ``final_layers``, ``drop_early_exits``:
    as ``attach_exits``. ``compare``: ``{name: boundaries}`` of exit sets to
    report beside the choice (e.g. the hand placement); the fixed-fraction
    (SDN) set is always there. ``log``: where the step lines go (None:
    nowhere). ``cost_model``: how segment times are measured, one network
    per boundary (``'per_point'``), one network with every probe and each
    head alone (``'shared'``: one compilation where the other needs one per
    boundary) or ``'auto'`` (shared on numba from ``timing.SHARED_FROM``
    boundaries on; see ``timing``). Returns ``(net, report)``: a ``BranchyNet`` with the chosen
    exits and calibrated thresholds, and a ``report.PlacementReport``.
    """
    say = log or (lambda *a: None)
    trunk = Trunk.of(network, input_shape, final_layers, drop_early_exits)
    for name, x in (('x_train', x_train), ('x_val', x_val)):
        validate_inputs(x, trunk.input_shape, name=name)
    y_train = as_labels(y_train, len(x_train), name='y_train')
    y_val = as_labels(y_val, len(x_val), name='y_val')
    if (x_test is None) != (y_test is None):
        raise InvalidValue('give x_test and y_test together, or neither')
    if x_test is not None:
        validate_inputs(x_test, trunk.input_shape, name='x_test')
        y_test = as_labels(y_test, len(x_test), name='y_test')
    timing.check_engine_name(engine)
    for name, value, minimum in (('k', k, 0), ('batchsize', batchsize, 1), ('n_probe', n_probe, 1),
                                 ('probe_epochs', probe_epochs, 1),
                                 ('probe_joint_epochs', probe_joint_epochs, 0),
                                 ('head_epochs', head_epochs, 0),
                                 ('timing_samples', timing_samples, 1),
                                 ('timing_repeats', timing_repeats, 1),
                                 ('check_configs', check_configs, 0)):
        _check_count(name, value, minimum)
    if target_acc is not None and budget is not None:
        raise InvalidValue('give target_acc or budget, not both')
    confidence.get_measure(measure)
    heads_mod.check_kind(heads)
    compare = dict(compare or {})
    for name, pts in compare.items():
        compare[name] = trunk.check_points(pts)

    d = trunk.describe()
    cands = search.candidate_points(trunk, min_share, max_share)
    if not cands:
        raise InvalidValue('no layer boundary lies between {:.0%} and {:.0%} of the network\'s '
                           'multiply-adds: widen min_share/max_share'.format(min_share, max_share))
    sdn = search.fixed_fraction_points(trunk, among=cands)
    probed = sorted(set(cands) | set(sdn) | {p for v in compare.values() for p in v})
    method = timing.chosen_method(cost_model, len(probed), engine, batchsize)
    say('placement: {} candidate boundaries between {:.0%} and {:.0%} of {:,} MACs: {}'.format(
        len(cands), min_share, max_share, d['main_macs'], ', '.join(
            '{} ({:.0%})'.format(b, trunk.share(b)) for b in cands)))

    kinds, links, hmacs = make_heads(trunk, probed, heads, head_budget)
    n_sub = min(n_probe, len(x_train))
    rng = numpy.random.RandomState(seed)
    idx = numpy.sort(rng.permutation(len(x_train))[:n_sub])
    n_cached = heads_mod.cached_sample_count(trunk, probed, n_sub, cache_bytes)
    features = heads_mod.feature_plan(n_sub, n_cached)
    say('placement: training {} probe heads ({}) on {:,} training samples for {} epochs; '
        'activations: {}'.format(len(probed), ', '.join(sorted(set(kinds))), n_sub,
                                      probe_epochs, _feature_note(trunk, probed, n_sub, n_cached,
                                                                  cache_bytes)))
    hist = heads_mod.train_heads(trunk, probed, links, x_train[idx], y_train[idx],
                                 epochs=probe_epochs, seed=seed, cache_bytes=cache_bytes,
                                 progress=progress, desc='probe heads')
    say('placement: each probe head saw {} samples in {} ({:,} from the cache, {:,} '
        'streamed)'.format(
            'all {:,}'.format(n_sub) if set(hist['seen']) == {n_sub} else
            ' / '.join('{:,}'.format(n) for n in hist['seen']),
            'its one epoch' if len(hist['seen']) == 1 else
            'each of its {} epochs'.format(len(hist['seen'])),
            hist['cached_samples'], hist['streamed_samples']))
    network_target = search_target = target_acc  # None: the search's default
    if probe_joint_epochs:
        logits, final_logits = _jointly_trained_logits(
            trunk, probed, links, x_train[idx], y_train[idx], x_val, probe_joint_epochs, seed,
            progress, say)
        if budget is None:
            network_target, search_target = _copy_target(trunk, final_logits, x_val, y_val,
                                                         target_acc, say)
    else:
        say('placement: probe and final outputs on {} held-out samples'.format(len(x_val)))
        logits, final_logits = heads_mod.head_logits(trunk, probed, links, x_val)
    outputs = {p: _outputs(z, measure) for p, z in zip(probed, logits)}
    final = _outputs(final_logits, measure)
    head_of = dict(zip(probed, links))

    xs = x_val[:timing_samples]
    say('placement: timing {} on the {} engine at batch size {} ({} samples, {} rounds)'.format(
        '{} networks, one per boundary'.format(len(probed)) if method == 'per_point' else
        'one network with all {} probes and each head alone'.format(len(probed)), engine,
        batchsize, len(xs), timing_repeats))
    model = timing.measure_cost_model(trunk, probed, links, xs, engine, batchsize,
                                      timing_repeats, progress, method)
    if model.method != method:
        say('placement: the shared network could not be timed on numba (see '
            'timing.measure_cost_model): timed one network per boundary')

    how = search.strategy(len(cands), k)
    say('placement: pricing every set of at most {} exits{}'.format(
        search.exhaustive_depth(len(cands), k), '' if how == 'exhaustive' else
        ', then adding exits greedily up to {}'.format(k)))
    best, evaluated = search.choose(cands, outputs, final, y_val, model.path_ms, k,
                                    search_target, budget, measure, candidates, progress)
    target = evaluated[0]['target_acc']  # the search's (the jointly trained copy's)
    if network_target is None:  # the search's default: the final exit's held-out accuracy
        network_target = target
    singles = {tuple(r['points']): r for r in evaluated if len(r['points']) == 1}
    rows = []
    for p, kind, m in zip(probed, kinds, hmacs):
        if p not in cands:
            continue
        single = singles.get((p,)) or search.evaluate_set(
            [p], outputs, final, y_val, model.path_ms([p]), target, budget, measure, candidates)
        rows.append({'point': p, 'layer': type(trunk.layers[p - 1]).__name__ if not hasattr(
            trunk.layers[p - 1], 'fn') else 'FL({})'.format(trunk.layers[p - 1].fn.__name__),
            'mac_share': trunk.share(p), 'head': kind, 'head_macs': int(m),
            'probe_acc': float((outputs[p][1] == y_val).mean()),
            'exit_share': single['exit_counts'][0] / len(y_val), 'acc': single['acc'],
            'predicted_ms': single['ms'], 'prefix_ms': model.prefix_ms[p],
            'head_ms': model.head_ms[p]})
    baselines = {'main network': search.evaluate_set([], outputs, final, y_val,
                                                     [model.main_ms], target, budget)}
    baselines['fixed fractions (SDN)'] = search.evaluate_set(
        sdn, outputs, final, y_val, model.path_ms(sdn), target, budget, measure, candidates)
    for name, pts in compare.items():
        baselines[name] = search.evaluate_set(pts, outputs, final, y_val, model.path_ms(pts),
                                              target, budget, measure, candidates)
    say('placement: chose {} (predicted {:.2%} at {:.4g} ms; main network {:.2%} at {:.4g} '
        'ms)'.format(best['points'] or 'no early exit', best['acc'], best['ms'],
                     baselines['main network']['acc'], model.main_ms))

    chosen = best['points']
    chosen_links = [head_of[p] for p in chosen]
    if head_epochs and chosen:
        say('placement: training the {} chosen heads on {} samples for {} epochs'.format(
            len(chosen), len(x_train), head_epochs))
        heads_mod.train_heads(trunk, chosen, chosen_links, x_train, y_train, epochs=head_epochs,
                              seed=seed + 1, cache_bytes=cache_bytes, progress=progress,
                              desc='chosen heads')
    net = trunk.build(chosen, chosen_links)
    if not chosen:  # the final exit alone: no thresholds to choose, predict and bundles run as is
        net.thresholdExits = []
    result = dict(best)
    if chosen:
        eng = timing.make_engine(net, engine)
        cal = net.calibrate(x_val, y_val, target_acc=None if budget else network_target,
                            budget=budget,
                            measure=measure, engine=eng, cost_samples=min(len(x_val), 200),
                            candidates=candidates, progress=progress)
        result['search_thresholds'] = result['thresholds']
        result['thresholds'], result['calibrated_acc'] = cal['thresholds'], cal['acc']
        result['calibrated_ms'] = cal['cost']
    x_eval, y_eval = (x_test, y_test) if x_test is not None else (x_val, y_val)
    result['measured_on'] = '{} {} samples, end to end on the {} engine at batch size {}'.format(
        len(x_eval), 'test' if x_test is not None else 'held-out (the set chosen on, so '
        'optimistic)', engine, batchsize)
    if chosen:
        acc, ms, counts = _measure_net(net, engine, x_eval, y_eval, batchsize, timing_repeats)
        result['measured_exit_counts'] = counts
        path = model.path_ms(chosen)
        result['predicted_ms_measured_shares'] = float(numpy.dot(path, counts) / len(y_eval))
    else:
        eng = timing.make_engine(net, engine)
        ms = timing.time_settings(eng, {'m': eng.main_route}, x_eval, batchsize,
                                  timing_repeats)['m']
        acc = float((eng.predict_main(x_eval) == y_eval).mean())
    result['measured_acc'], result['measured_ms'] = acc, ms
    say('placement: measured {:.2%} at {:.4g} ms per sample on {}'.format(
        acc, ms, result['measured_on']))

    configs = [chosen] if chosen else []
    for r in sorted(evaluated, key=lambda r: r['ms']):
        if len(configs) >= check_configs:
            break
        if r['points'] and r['points'] not in configs:
            configs.append(r['points'])
    additivity = timing.check_additivity(trunk, model, configs[:check_configs], head_of, xs,
                                         timing_repeats, progress) if configs else []
    if additivity:
        say('placement: segment sums against real networks: max relative error {:.1%}'.format(
            max(a['max_rel_error'] for a in additivity)))
    report = PlacementReport(
        candidates=rows, chosen=result, baselines=baselines, additivity=additivity,
        cost_model=model.as_dict(), sets_evaluated=len(evaluated),
        best_at_most={n: search.best_within(evaluated, n, budget) for n in range(k + 1)},
        settings={'engine': engine, 'batchsize': batchsize, 'k': k,
                  'search': how, 'target_acc': network_target,
                  'search_target_acc': target,
                  'budget': budget, 'measure': measure, 'n_probe': n_sub,
                  'probe_cached_samples': n_cached,
                  'probe_epochs': probe_epochs, 'probe_joint_epochs': probe_joint_epochs,
                  'head_epochs': head_epochs,
                  'n_val': len(x_val), 'min_share': min_share, 'max_share': max_share,
                  'head_budget': head_budget, 'probe_features': features,
                  'timing_samples': len(xs), 'timing_repeats': timing_repeats,
                  'cost_model': model.method,
                  'sdn_points': sdn, 'main_macs': d['main_macs']})
    net.placement_report = report
    return net, report


def _size(nbytes):
    for unit, scale in (('GB', 1e9), ('MB', 1e6), ('KB', 1e3)):
        if nbytes >= scale:
            return '{:.1f} {}'.format(nbytes / scale, unit)
    return '{:.0f} B'.format(nbytes)


def _feature_note(trunk, points, n, n_cached, cache_bytes):
    """How the probes' activations are held, for the log."""
    per = heads_mod.feature_bytes(trunk, points)
    if n_cached >= n:
        return 'all cached ({})'.format(_size(n * per))
    over = '{} a sample at {} boundaries, {} for all {:,}, over cache_bytes={}'.format(
        _size(per), len(points), _size(n * per), n, _size(cache_bytes))
    if not n_cached:
        return 'all streamed, recomputed every epoch ({})'.format(over)
    return '{:,} samples\' cached ({}), the other {:,} samples\' streamed, recomputed every ' \
        'epoch ({})'.format(n_cached, _size(n_cached * per), n - n_cached, over)


def _jointly_trained_logits(trunk, points, links, x, y, x_val, epochs, seed, progress, say):
    """``(probe logits, final logits)`` on ``x_val`` from a copy of the trunk
    trained jointly with the probes at ``points`` on ``x``, ``y`` (the given
    trunk and the probes' own links are left as they were)."""
    say('placement: training a copy of the trunk with every probe jointly on the {} '
        'samples for {} epochs'.format(len(x), epochs))
    joint = trunk.build(points, links)
    loop.train_exits(joint, x, y, main=False, batchsize=128, num_epoch=epochs, seed=seed,
                     progress=progress if progress is not None else on_terminal())
    joint.testing()
    say('placement: probe and final outputs on {} held-out samples'.format(len(x_val)))
    *logits, final_logits = joint.get_logits(x_val)
    return logits, final_logits


def _copy_target(trunk, copy_final_logits, x_val, y_val, target_acc, say):
    """``(network target, search target)``: the accuracy asked of the returned
    network (``target_acc``, default the given final exit's held-out
    accuracy) and of the search on the jointly trained copy, shifted by the
    copy's own final-exit accuracy so that both allow the same loss from
    their final exit."""
    _, given_final = heads_mod.head_logits(trunk, [], [], x_val)
    given_acc = float((given_final.argmax(axis=1) == y_val).mean())
    copy_acc = float((copy_final_logits.argmax(axis=1) == y_val).mean())
    wanted = given_acc if target_acc is None else target_acc
    shifted = min(1.0, max(0.0, wanted - given_acc + copy_acc))
    say('placement: final exit on the held-out set {:.2%} given, {:.2%} in the jointly '
        'trained copy: the search asks the copy for {:.2%}'.format(given_acc, copy_acc, shifted))
    return wanted, shifted
