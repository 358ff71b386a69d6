"""Exits added to a network already trained, trunk untouched: what they gain.

    python benchmarks/exits_after_training.py --network NAME (--snapshot FILE | --train-main)
        [--preset fast] [--seed S] [--n-train N] [--n-val N] [--n-test N]
        [--n-timing N] [--epochs-main E] [--batchsize B] [--cifar10 PATH] [--heads hand|auto|KIND]
        [--head-epochs E] [--head-samples N] [--repeats R] [--threads T]
        [--place K [--n-probe N] [--probe-epochs P]]

``--snapshot``: the main network's weights, either the driver's main-phase
snapshot (``_models/<network>.main.snapshot.npz``: the network after its
main-only epochs, before any joint training) or an npz the project wrote
(``fileio.save_npz``); or ``--train-main``: the main network alone trained
here as the driver's main phase trains it (the preset's epochs and batch
size, Adam, ``--seed``). The data, its held-out split and the test subset
are rebuilt as the driver built them for that ``--preset``, overrides and
``--seed``.

Exits go at the network's own branch points (its hand placement), their
heads trained alone on the frozen trunk (``placement.attach_exits``):
``hand`` the network's own head layers, freshly initialised, or a head kind
of ``placement.heads`` (``auto``: sized by a multiply-add budget). With ``--place K``
the exits are placed automatically instead (``placement.place_exits`` on
the frozen trunk, at most K exits, probes on ``--n-probe`` training images
for ``--probe-epochs`` epochs, the chosen heads then trained ``--head-epochs``
more on the training images; ``--heads hand`` means ``auto`` there; the time
printed is the whole ``place_exits`` call: probes, segment timing, search,
head training, calibration and its own held-out measurement). The last
exit stays the trained main network's. Thresholds are calibrated on the
held-out training images (entropy, cheapest on the numba path at batch size
1) to the main network's own held-out accuracy; accuracy and exit shares
are measured on the test subset; the main network and the network with
exits are timed on numba at batch size 1, end to end, interleaved over
``R`` rounds after a warm-up, and checked to give ``net.predict``'s labels
and exits.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import load, path_threads, same_as_predict, summary, train_main  # noqa: E402

import numpy  # noqa: E402


def load_main_weights(path, net):
    """``net`` given the weights in ``path``: a training snapshot's ``model/``
    arrays, or an npz of the project's own (read without pickle)."""
    from branchynet.io import fileio, safenpz
    with safenpz.open_npz(path) as npz:
        snapshot = any(k.startswith('model/') for k in npz.files)
        if snapshot:  # checked shapes, finite values; the optimizer's entries left aside
            safenpz.load_into(npz, net, path, path='model/')
    if not snapshot:
        fileio.load_npz(path, net)
    return net


def hand_heads(module):
    """The network's own early-exit heads, fresh, and the trunk boundaries
    they sit at (boundary b: after trunk layer b)."""
    fresh = module.get_network()
    heads = [list(fresh.branches[i]) for i in range(fresh.numexits() - 1)]
    return heads, list(fresh.branch_points[:-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--network', required=True, help='a network of networks/, e.g. lenet_mnist')
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument('--snapshot', help='the main network\'s weights (see above)')
    weights.add_argument('--train-main', action='store_true',
                         help='train the main network here (the preset\'s main phase)')
    p.add_argument('--preset', default='fast')
    p.add_argument('--seed', type=int, default=0, help='the driver run\'s --seed (its split)')
    for name in ('n_train', 'n_val', 'n_test', 'n_timing', 'epochs_main', 'batchsize'):
        p.add_argument('--' + name.replace('_', '-'), type=int, default=None)
    p.add_argument('--cifar10', default=None, help='CIFAR-10\'s location (as the driver\'s)')
    p.add_argument('--heads', default='hand')
    p.add_argument('--head-epochs', type=int, default=5)
    p.add_argument('--head-samples', type=int, default=None,
                   help='train the heads on the first N training images (default all)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--place', type=int, default=None, metavar='K',
                   help='place at most K exits automatically instead of at the hand points')
    p.add_argument('--n-probe', type=int, default=None,
                   help='with --place: training images the probes train on (default 4096)')
    p.add_argument('--probe-epochs', type=int, default=None,
                   help='with --place: probe epochs (default 3)')
    args = p.parse_args()
    if args.place is None and (args.n_probe, args.probe_epochs) != (None, None):
        p.error('--n-probe and --probe-epochs go with --place K')
    args.n_probe = 4096 if args.n_probe is None else args.n_probe
    args.probe_epochs = 3 if args.probe_epochs is None else args.probe_epochs
    if args.repeats < 1 or args.head_epochs < 1 or args.n_probe < 1 or args.probe_epochs < 1:
        p.error('--repeats, --head-epochs, --n-probe and --probe-epochs must be >= 1')
    if args.head_samples is not None and args.head_samples < 1:
        p.error('--head-samples must be >= 1')
    if args.place is not None and args.place < 1:
        p.error('--place K needs K >= 1')
    if args.cifar10:
        os.environ['BRANCHYNET_CIFAR10'] = os.path.abspath(args.cifar10)
    import branchynet  # noqa: F401
    from branchynet.driver import run, stages
    from branchynet.engines.numba import NumbaBranchyNet, processor
    from branchynet.evaluation import measurement
    from branchynet.measures import costs
    from branchynet.placement import attach_exits, place_exits

    if any(v is not None and v < 1 for v in (args.epochs_main, args.batchsize)):
        p.error('--epochs-main and --batchsize must be >= 1')
    if args.snapshot and (args.epochs_main or args.batchsize):
        p.error('--epochs-main and --batchsize go with --train-main')
    overrides = {k: getattr(args, k) for k in ('n_train', 'n_val', 'n_test', 'n_timing',
                                               'epochs_main', 'batchsize')}
    module, config = run.resolve_config(args.network, args.preset, overrides)
    x_train, y_train, x_test, y_test = run.load_dataset(config)
    x_train, y_train, x_val, y_val, _ = stages.split_validation(
        x_train, y_train, config['n_val'], args.seed)
    if x_val is None:
        raise SystemExit('exits_after_training: calibration needs held-out images; '
                         'give --n-val N (> 0)')
    n_timing = config.get('n_timing') or len(x_test)
    copy = run.data_copy(config)
    model, vector = processor()
    threads = path_threads(args.threads)
    print('{} ({}), weights {}; data {}: {} training, {} held out, {} test, {} timed'.format(
        args.network, config['title'], args.snapshot or 'trained here',
        copy['label'] if copy else config['dataset'], len(y_train), len(y_val), len(y_test),
        min(n_timing, len(y_test))))
    print('processor: {}; vector extensions: {}; OPENBLAS_CORETYPE={}; threads {}; '
          'load average {:.1f}'.format(model, ' '.join(vector) or 'none found',
                                       os.environ.get('OPENBLAS_CORETYPE', 'unset'), threads,
                                       load()))

    if args.snapshot:
        main_net = load_main_weights(args.snapshot, module.get_network())
    else:
        start = time.perf_counter()
        main_net = train_main(module, config, x_train, y_train, args.seed)
        print('main network trained here: {} epochs, batch {}, {:.0f} s'.format(
            config['epochs_main'], config['batchsize'], time.perf_counter() - start))
    main_net.testing()
    main_val = float((main_net.predict_main(x_val) == y_val).mean())
    main_test = float((main_net.predict_main(x_test) == y_test).mean())
    print('main network: held-out accuracy {:.2f} %, test {:.2f} %'.format(
        100 * main_val, 100 * main_test))

    n_heads = args.head_samples or len(x_train)
    # the automatic placement has no hand heads for its boundaries: 'hand' means 'auto' there
    head_kind = 'auto' if args.place and args.heads == 'hand' else args.heads
    start = time.perf_counter()
    if args.place:
        placed, _ = place_exits(main_net, x_train[:n_heads], y_train[:n_heads], x_val, y_val,
                                k=args.place, target_acc=main_val, engine='numba',
                                heads=head_kind,
                                n_probe=args.n_probe, probe_epochs=args.probe_epochs,
                                head_epochs=args.head_epochs, drop_early_exits=True,
                                seed=args.seed)
        points = list(placed.branch_points[:-1])
    else:
        if args.heads == 'hand':
            heads, points = hand_heads(module)
        else:
            heads, points = args.heads, hand_heads(module)[1]
        placed = attach_exits(main_net, points, x_train[:n_heads], y_train[:n_heads],
                              heads=heads, drop_early_exits=True, epochs=args.head_epochs,
                              seed=args.seed)
    head_s = time.perf_counter() - start
    if not points:
        print('no early exit pays on this trunk (the search\'s choice): nothing to time')
        summary(main_test_acc=round(100 * main_test, 2), head_seconds=round(head_s, 1))
        return
    placed.testing()
    engine = NumbaBranchyNet(placed, threads=threads)
    cal = placed.calibrate(x_val, y_val, target_acc=main_val, engine=engine)
    ts = [float(t) for t in cal['thresholds']]
    labels, exits = placed.predict(x_test, ts)
    acc = float((labels == y_test).mean())
    shares = numpy.bincount(exits, minlength=placed.numexits()) / len(y_test)
    print('exits at boundaries {} ({} heads{}), {} in {:.0f} s on {} images, {} epochs; '
          'T = {} (held-out accuracy {:.2f} %)'.format(
              points, head_kind, ', placed automatically' if args.place else '',
              'placed (search, heads, calibration)' if args.place else 'trained', head_s,
              n_heads, args.head_epochs,
              ', '.join('{:.4g}'.format(t) for t in ts), 100 * cal['acc']))
    print('test: accuracy {:.2f} % (main network {:.2f} %), exits {} %'.format(
        100 * acc, 100 * main_test, ' / '.join('{:.1f}'.format(100 * s) for s in shares)))

    x, y = x_test[:n_timing], y_test[:n_timing]
    same = same_as_predict(placed, engine, x, ts)
    print('numba labels and exits {} net.predict\'s on the timed images'.format(
        'equal' if same else 'DIFFER FROM'))
    if not same:
        raise SystemExit('exits_after_training: the numba path disagrees with net.predict')
    base, early, counts = [], [], None
    for r in range(args.repeats + 1):  # round 0: the warm-up
        b = measurement.measure_main(placed, x, y, engine=engine, trunk_only=False)
        m = measurement.measure_branchy(placed, x, y, ts, engine=engine, trunk_only=False)
        if r:
            base.append(b['ms'])
            early.append(m['ms'])
            counts = m['exit_counts']
    base, early = numpy.array(base), numpy.array(early)
    gain = numpy.median(base) / numpy.median(early)
    limit = costs.arithmetic_limit_gain(costs.exit_costs(placed), counts)
    print('numba, batch 1, {} images, {} rounds: main network {:.4f} ms ({:.4f}-{:.4f}), with '
          'exits {:.4f} ms ({:.4f}-{:.4f}); gain {:.2f}x ({:.2f}-{:.2f}); MAC limit {:.2f}x'.format(
              len(x), args.repeats, numpy.median(base), base.min(), base.max(),
              numpy.median(early), early.min(), early.max(), gain,
              base.min() / early.max(), base.max() / early.min(), limit))
    print('load average at the end {:.1f}'.format(load()))
    summary(main_test_acc=round(100 * main_test, 2), test_acc=round(100 * acc, 2),
            exit1_pct=round(100 * float(shares[0]), 1), head_seconds=round(head_s, 1),
            numba_gain=round(float(gain), 3), mac_limit=round(float(limit), 3))


if __name__ == '__main__':
    main()
