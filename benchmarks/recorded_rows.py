"""A recorded run's Table I rows timed again on every inference path,
ONNX Runtime's two forms included: the run's weights, its knee and
calibrated thresholds, its timed test images.

    python benchmarks/recorded_rows.py results/paper/RUN [--repeats R]
        [--samples N] [--threads T] [--no-chainer] [--target-accuracy PCT]

Reads ``RUN/<network>_results.json`` and ``RUN/<network>.npz`` as the run
wrote them and loads the run's data the way it did (CIFAR-10 networks: the
official tarball, or the image-folder copy ``$BRANCHYNET_CIFAR10`` names;
the source's checksum must match the run's). Timed: the main network
(baseline) and each recorded threshold setting, at batch size 1, end to end
(trunk, branch heads, softmax, entropy, routing), on Chainer, the fast path,
ONNX Runtime (one session per exit, and one early-exit graph) and numba, all
with the same threads; ``R`` rounds after a warm-up, every path and setting
once per round, interleaved. First, every engine's labels and exits are
checked against ``net.predict`` on the timed images. Printed per path and
setting: the median ms per sample with the fastest and slowest round, the
gain (baseline median / setting median, with the range from the baseline's
fastest over the setting's slowest to the reverse), accuracy and exit shares.

``--target-accuracy PCT`` adds a setting the run did not record: entropy
thresholds calibrated on the run's held-out training images (its
``val_indices``) to the cheapest setting, in multiply-adds, whose accuracy
there is at least PCT % (e.g. the paper's), as the driver's calibrated row
is chosen for the baseline's accuracy.
"""
import argparse
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import (blas_threads, engines, load, path_threads, same_as_predict,  # noqa: E402
                    summary)

import numpy  # noqa: E402


def read_run(folder):
    """(network name, results dict, weights path) of a recorded run's folder."""
    found = sorted(glob.glob(os.path.join(folder, '*_results.json')))
    if len(found) != 1:
        raise SystemExit('recorded_rows: {} holds {} *_results.json files; expected one '
                         '(a folder a driver run wrote, e.g. results/paper/...)'.format(
                             folder, len(found)))
    with open(found[0]) as f:
        results = json.load(f)
    name = results['network']
    weights = os.path.join(folder, name + '.npz')
    if not os.path.isfile(weights):
        raise SystemExit('recorded_rows: no {} beside {}'.format(weights, found[0]))
    return name, results, weights


def settings_of(results, device='CPU'):
    """``{label: thresholds}``: the baseline (None), then every B- row's thresholds."""
    out = {'baseline': None}
    for row in results['tables'].get(device, []):
        if row.get('Thrshld. T'):
            label = 'calibrated' if row['Network'].endswith('(calibrated)') else 'knee'
            # the record writes an infinite threshold (everyone leaves) as null
            out[label] = [float('inf') if t is None else float(t) for t in row['Thrshld. T']]
    return out


def timed_images(results):
    """The run's timed test images and labels, loaded as the run loaded them."""
    from branchynet.driver import run
    config = dict(results['config'])
    recorded = results['data'].get('source_sha256')
    source = run.data_copy(config)  # None: the official files
    if recorded or source:
        if (source or {}).get('sha256') != recorded:
            raise SystemExit('recorded_rows: the data found ({}, sha256 {}) is not the run\'s '
                             '(sha256 {}); set $BRANCHYNET_CIFAR10 to the copy it used'.format(
                                 (source or {}).get('label', 'the official files'),
                                 (source or {}).get('sha256'), recorded))
    _, _, x_test, y_test = run.load_dataset(config)
    n = results['data'].get('n_timing') or config.get('n_timing') or len(x_test)
    return x_test[:n], y_test[:n]


def held_out_images(results):
    """The run's held-out training images and labels (its calibration split)."""
    from branchynet.driver import run
    x_train, y_train, _, _ = run.load_dataset(dict(results['config']))
    index = numpy.asarray(results['data'].get('val_indices') or [], dtype=numpy.int64)
    if not len(index):
        raise SystemExit('recorded_rows: the run held out no training images (--n-val 0); '
                         '--target-accuracy needs them')
    return x_train[index], y_train[index]


def thresholds_at(net, x_val, y_val, path_macs, target_pct):
    """Entropy thresholds reaching ``target_pct`` % on ``(x_val, y_val)`` at the
    least expected multiply-adds, and the validation accuracy they give."""
    from branchynet.evaluation import calibration, screening
    scores, preds = screening.outputs_from_logits(net.get_logits(x_val), 'entropy')
    cal = calibration.calibrate_thresholds(scores, preds, y_val, path_macs,
                                           target_acc=target_pct / 100.)
    if not cal['met']:
        raise SystemExit('recorded_rows: no thresholds reach {} % on the held-out images '
                         '(at most {:.2f} %)'.format(target_pct, 100 * cal['acc']))
    return [float(t) for t in cal['thresholds']], float(cal['acc'])


def check_engines(net, paths, x, settings):
    """Every engine's labels and exits equal ``net.predict``'s on ``x``."""
    for label, ts in settings.items():
        if ts is None:
            continue
        want = net.predict(x, ts)
        for name, engine in paths:
            if name == 'chainer':
                continue
            same = same_as_predict(net, engine, x, ts, want)
            print('  {} at {}: labels and exits {} net.predict\'s'.format(
                name, label, 'equal' if same else 'DIFFER FROM'))
            if not same:
                raise SystemExit('recorded_rows: {} disagrees with net.predict'.format(name))


def time_rounds(net, paths, x, y, settings, repeats):
    """{(path, setting): [ms per sample of each round]} and the measures of the last."""
    from branchynet.evaluation import measurement
    ms, last = {}, {}
    for r in range(repeats + 1):  # round 0: the warm-up
        for name, engine in paths:
            for label, ts in settings.items():
                out = measurement.measure_main(net, x, y, engine=engine, trunk_only=False) \
                    if ts is None else \
                    measurement.measure_branchy(net, x, y, ts, engine=engine, trunk_only=False)
                if r:
                    ms.setdefault((name, label), []).append(out['ms'])
                last[name, label] = out
        if r:
            print('  round {} of {} done'.format(r, repeats), flush=True)
    return ms, last


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('run', help='a recorded run folder (results/paper/...)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--samples', type=int, default=None,
                   help='time on the first N of the run\'s timed images')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--no-chainer', action='store_true', help='leave the Chainer path out')
    p.add_argument('--target-accuracy', type=float, metavar='PCT', default=None,
                   help='also time thresholds calibrated on the run\'s held-out images to '
                   'reach PCT %% there (e.g. the paper\'s accuracy)')
    args = p.parse_args()
    if args.repeats < 1:
        p.error('--repeats must be >= 1')
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 100:
        p.error('--target-accuracy is a percentage in (0, 100], got {}'.format(
            args.target_accuracy))
    import branchynet  # noqa: F401
    from branchynet.engines.numba import processor
    from branchynet.io import fileio
    from branchynet.measures import costs
    name, results, weights = read_run(args.run)
    module = __import__('networks.' + name, fromlist=['get_network'])
    net = module.get_network()
    fileio.load_npz(weights, net)
    net.testing()
    settings = settings_of(results)
    if args.target_accuracy is not None:
        x_val, y_val = held_out_images(results)
        ts, val_acc = thresholds_at(net, x_val, y_val, results['costs']['path_macs'],
                                    args.target_accuracy)
        label = 'at {:g}%'.format(args.target_accuracy)
        settings[label] = ts
        print('{}: T={} from {} held-out images (their accuracy {:.2f} %)'.format(
            label, ts, len(y_val), 100 * val_acc))
    x, y = timed_images(results)
    if args.samples:
        x, y = x[:args.samples], y[:args.samples]
    model, vector = processor()
    print('{}: {} ({}), {} timed images; settings {}'.format(
        args.run, results['title'], name, len(x),
        ', '.join('{}={}'.format(k, v) for k, v in settings.items())))
    print('processor: {}; vector extensions: {}; OPENBLAS_CORETYPE={}; load average {:.1f}'.format(
        model, ' '.join(vector) or 'none found', os.environ.get('OPENBLAS_CORETYPE', 'unset'),
        load()))
    with blas_threads(args.threads):
        paths = engines(net, chainer=not args.no_chainer, threads=args.threads,
                        onnx_forms=('sessions', 'graph'))
        check_engines(net, paths, x, settings)
        ms, last = time_rounds(net, paths, x, y, settings, args.repeats)
    path_costs = costs.exit_costs(net)
    print('\n{:>14s} {:>11s} {:>26s} {:>22s} {:>8s} {:>20s} {:>9s}'.format(
        'path', 'setting', 'ms/sample median (range)', 'gain (range)', 'acc %', 'exits %',
        'MAC limit'))
    out = {'threads': path_threads(args.threads), 'samples': len(x)}
    for name_, _ in paths:
        base = numpy.array(ms[name_, 'baseline'])
        for label in settings:
            t = numpy.array(ms[name_, label])
            m = last[name_, label]
            counts = m.get('exit_counts') or [0] * (net.numexits() - 1) + [len(x)]
            shares = ' / '.join('{:.1f}'.format(100 * c / len(x)) for c in counts)
            gain = numpy.median(base) / numpy.median(t)
            limit = costs.arithmetic_limit_gain(path_costs, counts) if label != 'baseline' \
                else 1.0
            print('{:>14s} {:>11s} {:>9.3f} ({:>6.3f}-{:>6.3f}) {:>8.2f}x ({:.2f}-{:.2f}) '
                  '{:>8.2f} {:>20s} {:>8.2f}x'.format(
                      name_, label, numpy.median(t), t.min(), t.max(), gain,
                      base.min() / t.max(), base.max() / t.min(), 100 * m['acc'], shares, limit))
            key = label.replace(' ', '_').replace('%', 'pct')  # 'at 79.19%' -> at_79.19pct
            out['{}_{}_ms'.format(name_, key)] = round(float(numpy.median(t)), 4)
    print('load average at the end {:.1f}'.format(load()))
    summary(**out)


if __name__ == '__main__':
    main()
