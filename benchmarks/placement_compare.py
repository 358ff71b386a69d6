"""Automatic exit placement against the hand placement and the fixed-fraction
rule, each trained with the same recipe, over several seeds.

    python benchmarks/placement_compare.py --network NAME [--preset fast]
        [--seeds 0,1,2] [--k 2[,4...]] [--probe-joint-epochs P] [--n-probe N] [--head-epochs E]
        [--finetune-epochs F]
        [--hand-heads hand|auto] [--exhaustive] [--n-train N] [--n-val N] [--n-test N]
        [--n-timing N] [--epochs-main E] [--batchsize B] [--cifar10 PATH] [--repeats R]
        [--threads T]

Per seed, on the data split the driver makes for ``--preset`` and ``--seed``:

1. the main network alone (no early exits) is trained as the driver's main
   phase trains it (the preset's epochs and batch size, Adam);
2. ``placement.place_exits`` chooses at most ``--k`` exits on that frozen
   trunk (probe heads, numba batch-1 segment times, held-out thresholds for
   the main network's held-out accuracy; with ``--probe-joint-epochs`` > 0,
   the probes' outputs come from a copy of the trunk trained jointly with
   all of them for that many epochs on the probe subset); the time the call
   takes is the search time;
3. the exit sets, the automatic choice (one per ``--k``), the network's own hand placement
   and the fixed-fraction rule (SDN's 15/30/.../90 % grid, snapped to the
   candidate boundaries), are each trained the same way: fresh heads on the
   frozen trunk for ``--head-epochs`` epochs, then ``--finetune-epochs``
   joint epochs of the whole network (``placement.attach_exits``). The
   automatic and fixed-fraction sets get heads of the family ``auto``; the
   hand set gets the network's own heads (``--hand-heads hand``) or
   ``auto`` ones;
4. each is calibrated on the held-out images (entropy, numba path, batch
   size 1) to the main network's held-out accuracy, measured on the test
   subset (accuracy, exit shares), and timed on numba at batch size 1, end
   to end, interleaved with the main network over ``R`` rounds after a
   warm-up; every engine is checked to give ``net.predict``'s labels and
   exits on the timed images.

``--k 2,4`` runs one search for the largest and reports, beside the
automatic set of at most 2 exits (``automatic``), the search's best set of
at most 4 (``automatic, at most 4 exits``), trained the same way (the
smallest ``--k`` is ``automatic``). Among the automatic, hand and
fixed-fraction sets, one that is the same as one already trained with the
same heads is not trained again: its row repeats that one's, and the table
names it.

``--exhaustive`` also trains and times every set of 1 to the largest ``--k`` candidate
boundaries the same way (auto heads), for the automatic pick's distance
from the best set measured.

The probe-predicted exit shares (the search's, on the held-out images) are
set against the realised ones (test images, after training) by Spearman's
rank correlation over the early exits of the automatic and fixed-fraction
sets, and of the hand set where it gets ``auto`` heads (the probes' family;
``--exhaustive`` sets have no prediction). A set the search found
worthless (no early exit pays) is reported as the main network itself.
"""
import argparse
import itertools
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import load, path_threads, same_as_predict, summary, train_main  # noqa: E402
from exits_after_training import hand_heads  # noqa: E402

import numpy  # noqa: E402

SDN = 'fixed fractions (SDN)'


def spearman(a, b):
    """Spearman's rank correlation of two equal-length sequences (ties share
    their mean rank); nan where either is constant or shorter than 3."""
    from scipy import stats
    a, b = numpy.asarray(a, float), numpy.asarray(b, float)
    if len(a) < 3 or numpy.ptp(a) == 0 or numpy.ptp(b) == 0:
        return float('nan')
    return float(stats.spearmanr(a, b)[0])


def _whole_numbers(text):
    """The comma-separated whole numbers of ``text``; [] where any is not one."""
    try:
        return [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
        return []


def parse_seeds(text):
    seeds = _whole_numbers(text)
    if not seeds:
        raise SystemExit('placement_compare: --seeds wants comma-separated whole numbers, '
                         'e.g. 0,1,2; got {!r}'.format(text))
    return seeds


def run_seed(args, module, config, seed, threads):
    """One seed's rows: ``{set name: row}`` and the search's facts."""
    from branchynet.driver import run, stages
    from branchynet.engines.numba import NumbaBranchyNet
    from branchynet.evaluation import measurement
    from branchynet.placement import attach_exits, place_exits
    from branchynet.placement.trunk import Trunk

    x_train, y_train, x_test, y_test = run.load_dataset(config)
    x_train, y_train, x_val, y_val, _ = stages.split_validation(
        x_train, y_train, config['n_val'], seed)
    if x_val is None:
        raise SystemExit('placement_compare: the thresholds need held-out images; '
                         'give --n-val N (> 0)')
    start = time.perf_counter()
    main_net = train_main(module, config, x_train, y_train, seed)
    main_net.testing()
    main_s = time.perf_counter() - start
    main_val = float((main_net.predict_main(x_val) == y_val).mean())
    main_test = float((main_net.predict_main(x_test) == y_test).mean())
    print('seed {}: main network trained in {:.0f} s ({} epochs): held-out {:.2f} %, test '
          '{:.2f} %'.format(seed, main_s, config['epochs_main'], 100 * main_val,
                            100 * main_test), flush=True)

    own_heads, hand_points = hand_heads(module)
    start = time.perf_counter()
    _, report = place_exits(main_net, x_train, y_train, x_val, y_val, k=max(args.k),
                            target_acc=main_val, engine='numba', seed=seed,
                            probe_joint_epochs=args.probe_joint_epochs, n_probe=args.n_probe,
                            compare={'hand': hand_points}, drop_early_exits=True,
                            log=print)
    search_s = time.perf_counter() - start
    trunk = Trunk.of(main_net, drop_early_exits=True)
    sets, predicted = {}, {}
    for k in args.k:
        best = report['best_at_most'][k]
        sets[automatic_name(k, args.k)] = list(best['points'])
        predicted[automatic_name(k, args.k)] = best
    sets.update({'hand': hand_points, SDN: list(report['settings']['sdn_points'])})
    predicted.update({'hand': report['baselines']['hand'], SDN: report['baselines'][SDN]})
    if args.exhaustive:  # every set of 1..k candidates, trained the same way
        cands = [c['point'] for c in report['candidates']]
        for size in range(1, max(args.k) + 1):
            for points in itertools.combinations(cands, size):
                sets['set {}'.format(list(points))] = list(points)
    print('seed {}: search {:.0f} s; {}'.format(seed, search_s, ', '.join(
        '{} {}'.format(name, pts or 'no early exit') for name, pts in sets.items()
        if name in predicted)), flush=True)

    nets, rows, same_as, trained = {}, {}, {}, {}
    for name, points in sets.items():
        if not points:
            continue
        heads = own_heads if (name == 'hand' and args.hand_heads == 'hand') else 'auto'
        key = (tuple(points), heads if isinstance(heads, str) else 'hand')
        if name in predicted and key in trained:  # the same set, heads and recipe: once
            same_as[name] = trained[key]
            print('seed {}: {} is the same set as {}: not trained again'.format(
                seed, name, trained[key]), flush=True)
            continue
        if name in predicted:
            trained[key] = name
        start = time.perf_counter()
        net = attach_exits(main_net, points, x_train, y_train, heads=heads,
                           drop_early_exits=True, epochs=args.head_epochs,
                           finetune_epochs=args.finetune_epochs, seed=seed)
        net.testing()
        engine = NumbaBranchyNet(net, threads=threads)
        cal = net.calibrate(x_val, y_val, target_acc=main_val, engine=engine)
        ts = [float(t) for t in cal['thresholds']]
        labels, exits = net.predict(x_test, ts)
        shares = numpy.bincount(exits, minlength=net.numexits()) / len(y_test)
        nets[name] = (net, engine, ts)
        rows[name] = {'points': points, 'mac_shares': [trunk.share(p) for p in points],
                      'thresholds': ts, 'met': bool(cal['met']),
                      'acc': float((labels == y_test).mean()),
                      'shares': shares.tolist(), 'train_s': time.perf_counter() - start,
                      'predicted_shares': [c / len(y_val) for c in predicted[name][
                          'exit_counts'][:len(points)]] if name in predicted else []}
        print('seed {}: {} trained in {:.0f} s; held-out target {}met; test {:.2f} %, exits '
              '{} %'.format(seed, name, rows[name]['train_s'], '' if cal['met'] else 'NOT ',
                            100 * rows[name]['acc'],
            ' / '.join('{:.1f}'.format(100 * s) for s in shares)), flush=True)

    n_timing = min(config.get('n_timing') or len(x_test), len(x_test))
    x, y = x_test[:n_timing], y_test[:n_timing]
    for name, (net, engine, ts) in nets.items():
        if not same_as_predict(net, engine, x, ts):
            raise SystemExit('placement_compare: the numba path disagrees with net.predict '
                             '({} set, seed {})'.format(name, seed))
    any_net, any_engine, _ = next(iter(nets.values())) if nets else (None, None, None)
    if any_net is None:  # nothing to time: every set is the main network
        main_engine = NumbaBranchyNet(main_net, threads=threads)
        any_net, any_engine = main_net, main_engine
    times = {name: [] for name in ['main network'] + list(nets)}
    for r in range(args.repeats + 1):  # round 0: the warm-up
        got = {'main network': measurement.measure_main(any_net, x, y, engine=any_engine,
                                                        trunk_only=False)['ms']}
        for name, (net, engine, ts) in nets.items():
            got[name] = measurement.measure_branchy(net, x, y, ts, engine=engine,
                                                    trunk_only=False)['ms']
        if r:
            for name, ms in got.items():
                times[name].append(ms)
    base = numpy.array(times['main network'])
    for name, first in same_as.items():
        rows[name] = dict(rows[first], same_as=first)
        times[name] = times[first]
    for name in sets:
        row = rows.setdefault(name, {'points': [], 'mac_shares': [], 'thresholds': [],
                                     'met': True,
                                     'acc': main_test, 'shares': [1.0], 'train_s': 0.0,
                                     'predicted_shares': []})
        t = numpy.array(times.get(name) or times['main network'])
        row.update(ms=float(numpy.median(t)), gain=float(numpy.median(base) / numpy.median(t)),
                   gain_low=float(base.min() / t.max()), gain_high=float(base.max() / t.min()))
    rows = {name: rows[name] for name in sets}  # in the sets' order
    # the probes are of the auto family: a hand set with its own heads is left out
    same_heads = [n for n in predicted if not (n == 'hand' and args.hand_heads == 'hand') and
                  n not in same_as]
    pred = [p for name in same_heads for p in rows[name]['predicted_shares']]
    real = [s for name in same_heads for s in rows[name]['shares'][:len(rows[name]['points'])]
            if rows[name]['predicted_shares']]
    facts = {'seed': seed, 'main_test': main_test, 'main_val': main_val,
             'main_ms': float(numpy.median(base)), 'search_s': search_s,
             'rank_correlation': spearman(pred, real), 'n_timed': len(x)}
    return rows, facts


def parse_ks(text):
    ks = _whole_numbers(text)
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise SystemExit('placement_compare: --k wants distinct comma-separated whole numbers '
                         '>= 1, e.g. 2 or 2,4; got {!r}'.format(text))
    return sorted(ks)


def automatic_name(k, ks):
    """The automatic set's row: ``automatic`` for the smallest ``--k``."""
    return 'automatic' if k == ks[0] else 'automatic, at most {} exits'.format(k)


def print_table(network, results):
    print('\n{}: numba, batch 1, end to end; gain = main network\'s median time over the '
          'set\'s (range: slowest/fastest rounds)'.format(network))
    print('| seed | set | exits at (MAC share) | held-out target met | exit shares % | test acc. % '
          '(main) | ms | gain (range) | probe-predicted shares % |')
    print('|---|---|---|---|---|---|---|---|---|')
    for rows, facts in results:
        for name, r in rows.items():
            print('| {} | {} | {} | {} | {} | {:.2f} ({:.2f}) | {:.4f} | {:.2f}x ({:.2f}-{:.2f}) | '
                  '{} |'.format(
                      facts['seed'], name + (' (the same set as {})'.format(r['same_as'])
                                             if r.get('same_as') else ''),
                      ', '.join('{} ({:.0%})'.format(p, s) for p, s in zip(
                          r['points'], r['mac_shares'])) or 'none', 'yes' if r['met'] else 'no',
                      ' / '.join('{:.1f}'.format(100 * s) for s in r['shares']),
                      100 * r['acc'], 100 * facts['main_test'], r['ms'], r['gain'],
                      r['gain_low'], r['gain_high'],
                      ' / '.join('{:.1f}'.format(100 * s) for s in r['predicted_shares']) or '-'))
    for rows, facts in results:
        print('seed {}: search {:.0f} s; rank correlation of probe-predicted and realised exit '
              'shares {:.2f}; main network {:.4f} ms'.format(
                  facts['seed'], facts['search_s'], facts['rank_correlation'], facts['main_ms']))
    names = list(results[0][0])
    for name in names:
        gains = numpy.array([rows[name]['gain'] for rows, _ in results])
        accs = numpy.array([rows[name]['acc'] for rows, _ in results])
        print('{}: gain mean {:.2f}x (seeds {:.2f}-{:.2f}), test accuracy mean {:.2f} %'.format(
            name, gains.mean(), gains.min(), gains.max(), 100 * accs.mean()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--network', required=True, help='a network of networks/, e.g. lenet_mnist')
    p.add_argument('--preset', default='fast')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--k', default='2', help='the most exits the search may place; several '
                   '(e.g. 2,4) report the best set for each from one search')
    p.add_argument('--probe-joint-epochs', type=int, default=0)
    p.add_argument('--n-probe', type=int, default=4096,
                   help='training images the probes (and their joint copy) train on')
    p.add_argument('--head-epochs', type=int, default=3)
    p.add_argument('--finetune-epochs', type=int, default=1)
    p.add_argument('--hand-heads', choices=('hand', 'auto'), default='hand')
    p.add_argument('--exhaustive', action='store_true',
                   help='also train and time every set of 1 to the largest --k candidates '
                   'the same way')
    for name in ('n_train', 'n_val', 'n_test', 'n_timing', 'epochs_main', 'batchsize'):
        p.add_argument('--' + name.replace('_', '-'), type=int, default=None)
    p.add_argument('--cifar10', default=None, help='CIFAR-10\'s location (as the driver\'s)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args()
    seeds = parse_seeds(args.seeds)
    args.k = parse_ks(args.k)
    positive = [args.repeats, args.head_epochs] + [
        v for v in (args.epochs_main, args.batchsize) if v is not None]
    if min(positive) < 1 or args.finetune_epochs < 0 or args.probe_joint_epochs < 0:
        p.error('--repeats, --head-epochs, --epochs-main and --batchsize must be >= 1, '
                '--finetune-epochs and --probe-joint-epochs >= 0')
    if args.cifar10:
        os.environ['BRANCHYNET_CIFAR10'] = os.path.abspath(args.cifar10)
    import branchynet  # noqa: F401
    from branchynet.driver import run
    from branchynet.engines.numba import processor

    overrides = {k: getattr(args, k) for k in ('n_train', 'n_val', 'n_test', 'n_timing',
                                               'epochs_main', 'batchsize')}
    module, config = run.resolve_config(args.network, args.preset, overrides)
    copy = run.data_copy(config)
    model, vector = processor()
    threads = path_threads(args.threads)
    print('{} ({}), preset {}, data {}; seeds {}; main network {} epochs, batch {}; probes '
          'trained jointly {} epochs; heads {} epochs on the frozen trunk, then {} joint'.format(
              args.network, config['title'], args.preset,
              copy['label'] if copy else config['dataset'], seeds, config['epochs_main'],
              config['batchsize'], args.probe_joint_epochs, args.head_epochs,
              args.finetune_epochs))
    print('processor: {}; vector extensions: {}; OPENBLAS_CORETYPE={}; threads {}; '
          'load average {:.1f}'.format(model, ' '.join(vector) or 'none found',
                                       os.environ.get('OPENBLAS_CORETYPE', 'unset'), threads,
                                       load()), flush=True)
    results = [run_seed(args, module, config, seed, threads) for seed in seeds]
    print_table(args.network, results)
    print('load average at the end {:.1f}'.format(load()))
    values = {}
    for rows, facts in results:
        for name, r in rows.items():
            key = {'automatic': 'auto', 'hand': 'hand', SDN: 'sdn'}.get(name) or {
                automatic_name(k, args.k): 'auto{}'.format(k) for k in args.k[1:]}.get(name)
            if key is None:
                continue
            values['seed{}_{}_gain'.format(facts['seed'], key)] = round(r['gain'], 3)
            values['seed{}_{}_acc'.format(facts['seed'], key)] = round(100 * r['acc'], 2)
        values['seed{}_search_s'.format(facts['seed'])] = round(facts['search_s'], 1)
    summary(**values)


if __name__ == '__main__':
    main()
