"""The stages of one network's run that measure it: exit accuracies, the
engines timed at batch size 1 against the baseline, the threshold screen and
its knee (``time_and_screen``), and thresholds calibrated on a validation
split compared with the test-set knee (``calibrate_and_compare``).
``driver.run`` calls them in order."""
import itertools
import os
import time

import numpy
from sklearn.model_selection import train_test_split

from branchynet import visualize
from branchynet.evaluation import calibration, measurement, screening, tradeoff
from branchynet.io import runrecord
from branchynet.measures import confidence, costs
from branchynet.reporting import tables
from branchynet.engines.fast import FastBranchyNet
from branchynet.io.fileio import atomic_write
from branchynet.validation import InvalidValue


def log(msg):
    print('[{}] {}'.format(time.strftime('%H:%M:%S'), msg), flush=True)


def exit_accuracies(net, x, y, sms=None):
    """Test accuracy of every exit on every sample (no early exit)."""
    sms = net.get_SM(x) if sms is None else sms
    return [float((sm.argmax(axis=1) == y).mean()) for sm in sms]


def _screen(net, config, xs, ys, engines, path_macs, outputs=None):
    """Every grid point's accuracy, exits and per-engine time.

    ``cached`` (default): exit outputs computed once, per-exit costs measured
    once, the grid evaluated in array operations (times predicted).
    ``original``: one real batch-1 pass per point, as the original did
    (Chainer path only). ``outputs``: the cached exit outputs of ``xs`` when
    already computed (by the ranks of a distributed run)."""
    if config['screen'] == 'original':
        screen = screening.screen_thresholds(net, xs, ys, config['thresholds'])
        records = [dict(r, ms_chainer=r['ms']) for r in screen.records]
        return records, {'method': 'original: one batch-1 pass per point'}
    records, info = screening.screen_cached(net, xs, ys, config['thresholds'], engines=engines,
                                            cost_samples=config['n_cost'],
                                            path_macs=path_macs, outputs=outputs)
    info['method'] = 'cached: exit outputs once, times predicted from per-exit costs'
    return records, info


#: Timed repeats of every setting (``--timing-repeats``) per preset, when
#: neither the command line nor the network's preset sets ``timing_repeats``.
TIMING_REPEATS = {'tiny': 3, 'fast': 5, 'paper': 5}


def timing_repeats(config):
    """The number of timed passes per setting ``config`` asks for."""
    return config.get('timing_repeats') or TIMING_REPEATS.get(config['preset'], 5)


#: The inference paths Table I can time, in its column order; Chainer is the
#: reference (the accuracy, Time and Gain columns) and always timed.
TIMED_PATHS = ('chainer', 'fast', 'numba')


def parse_engines(text):
    """``--engines chainer,fast,numba`` as a tuple of ``TIMED_PATHS`` (None: all of
    them); Chainer is added where the list leaves it out."""
    if text is None:
        return TIMED_PATHS
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in TIMED_PATHS]
    if unknown or not names:
        raise InvalidValue('--engines {!r}: expected a comma-separated list of {} (chainer, '
                           'the reference, is always timed)'.format(text, ', '.join(TIMED_PATHS)))
    return tuple(p for p in TIMED_PATHS if p in names or p == 'chainer')


def timing_engines(net, label, name='the network', paths=TIMED_PATHS):
    """The inference paths Table I times: ``({path: engine}, notes)``.

    Always Chainer (``net``); of ``paths`` (``--engines``) the fast path, and
    the numba path when numba is installed and compiles the network (on the
    CPU only). ``notes`` say why a path's columns are empty (left out, or
    why numba could not run), and the log says it too.
    """
    engines, notes = {'chainer': net}, []
    left_out = [p for p in TIMED_PATHS if p not in paths]
    if left_out:
        notes.append('{} columns empty on {}: left out by --engines'.format(
            ' and '.join(p.capitalize() for p in left_out), label))
        log('{}: not timed (--engines): {}'.format(label, ', '.join(left_out)))
    if 'fast' in paths:
        engines['fast'] = FastBranchyNet(net)
    reason = None
    if 'numba' not in paths:
        pass
    elif net.xp is not numpy:
        reason = 'the numba path runs on the CPU only'
    else:
        try:
            from branchynet.engines import numba as numbapath
        except ImportError as e:
            reason = str(e)
        else:
            try:
                engines['numba'] = compile_numba_engine(net, name, label)
            except (ImportError, numbapath.NotCompilable) as e:
                reason = str(e)
    if reason is not None:
        notes.append('Numba columns empty on {}: {}'.format(label, reason))
        log('{}: no numba column: {}'.format(label, reason))
    return engines, notes


def time_against_baseline(net, xs, ys, thresholds, engines, repeats):
    """The baseline and ``thresholds`` on every path of ``engines``, timed
    together (``measurement.time_settings``): a warm-up, then ``repeats``
    rounds of baseline Chainer, branchy Chainer, baseline fast, branchy fast,
    baseline numba, branchy numba (as ``engines`` holds them). The Chainer
    settings also give the trunk-only time, from the same passes. Returns
    ``{path: (baseline, branchy)}``."""
    settings = []
    for path, engine in engines.items():
        staged = path == 'chainer'
        settings += [measurement.main_setting('baseline ' + path, net, engine, staged),
                     measurement.branchy_setting(path, net, thresholds, engine, staged)]
    timed = measurement.time_settings(settings, xs, ys, repeats=repeats)
    return {path: (timed['baseline ' + path], timed[path]) for path in engines}


def _table_rows(title, label, timed, costs_, notes):
    """The Table I block (``tables.branchy_table_rows``) of ``timed``."""
    def pair(path):
        return timed.get(path, (None, None))
    (baseline, branchy), (base_fast, fast), (base_numba, numba) = \
        pair('chainer'), pair('fast'), pair('numba')
    return tables.branchy_table_rows(
        title, baseline, branchy, device=label, printout=False, baseline_fast=base_fast,
        branchy_fast=fast, baseline_numba=base_numba, branchy_numba=numba,
        mac_limit=costs.arithmetic_limit_gain(costs_, branchy['exit_counts']), notes=notes)


#: Table I's gain column of each inference path.
GAIN_COLUMNS = {'chainer': 'Gain', 'fast': 'Fast gain', 'numba': 'Numba gain'}


#: How the note of a point chosen as the knee begins when its measured gain on
#: the knee's path is not beyond noise (``knee_verdict``).
NOT_A_KNEE = 'not a knee'


def knee_verdict(choice, row, path):
    """``tradeoff.choose_knee``'s choice after the BranchyNet ``row`` was
    timed: one verdict for the row's label and the trade-off figure's title.

    A knee whose measured gain on ``path`` (where it was chosen) is not beyond
    the noise of its repeats is no knee; the note says that of that path
    alone, with its measured gain, since the other paths' gain columns keep
    their own verdicts (a plain "no gain" beside a Gain column reading 1.96x
    would contradict it). A choice that was no knee already keeps its note
    (``tradeoff.NO_GAIN``: no point at the baseline's accuracy is faster)."""
    cell = row[GAIN_COLUMNS[path]]
    if not choice['gain'] or tables.is_gain(cell):
        return choice
    slower = (cell.get('verdict') == 'slower') if isinstance(cell, dict) else \
        cell is not None and cell < 1
    gain = tables.format_cell('Gain', cell)
    gain = gain[:-len(tables.WITHIN_NOISE) - 1] if gain.endswith(tables.WITHIN_NOISE) else gain
    return dict(choice, gain=False, note='{}: on the {} path, where it was chosen, its gain '
                'of {} is {}'.format(NOT_A_KNEE, path, gain,
                                     'a loss' if slower else tables.WITHIN_NOISE))


def near_chance_note(accuracy, labels):
    """A note when the baseline's ``accuracy`` on ``labels`` is under twice
    chance (one over the classes present): so little training that the
    exits' gains say nothing about the network. None otherwise."""
    classes = max(2, len(numpy.unique(numpy.asarray(labels))))
    if accuracy >= 2. / classes:
        return None
    return ('the baseline\'s accuracy on the timed samples, {:.2f} %, is under twice chance '
            '({:.1f} % for {} classes): too little training for these gains to describe the '
            'network'.format(100 * accuracy, 100. / classes, classes))


def fastest_path(net, engines, xs, ys, repeats=3):
    """The path a user would deploy: ``(path, {path: baseline ms})``.

    Every path's baseline (the main network alone) is timed at batch size 1
    on ``xs``, interleaved, ``repeats`` rounds after a warm-up; the path with
    the smallest median wins. Table I's knee and the calibrated row are
    chosen with that path's times, so the gain they promise is the one the
    fastest runtime gives (on the Chainer path the per-call overhead of the
    branch hides most of the saving)."""
    settings = [measurement.main_setting('baseline ' + path, net, engine, False)
                for path, engine in engines.items()]
    timed = measurement.time_settings(settings, xs, ys, repeats=repeats,
                                      warmup=min(len(xs), measurement.WARMUP_SAMPLES))
    base_ms = {path: timed['baseline ' + path]['ms'] for path in engines}
    return min(base_ms, key=base_ms.get), base_ms


def time_and_screen(net, name, title, config, x_test, y_test, label, out, costs_,
                    outputs=None):
    """Grid screening, the knee, and the knee timed against the baseline.

    Every grid point's time is predicted on every path from that path's
    per-exit costs (cached screening; the original way times the Chainer
    path alone). The knee is chosen on the fastest path (``fastest_path``):
    the fastest point whose accuracy is at least the baseline's and which is
    faster than the baseline beyond noise (``tradeoff.choose_knee``); the
    baseline and the knee are then timed on every path (Chainer, fast,
    numba) with the protocol of ``time_against_baseline``. Without such a
    point, or when the knee's repeats on that path do not beat the
    baseline's (``tables.is_gain``), the table and the figure say so. Writes
    the Table I block, every point and every timed repeat (JSON) and Fig. 3.
    """
    n_timing = config.get('n_timing') or len(x_test)
    xs, ys = x_test[:n_timing], y_test[:n_timing]
    repeats = timing_repeats(config)
    engines, notes = timing_engines(net, label, name, config.get('engines') or TIMED_PATHS)
    screen_engines = {'chainer': net} if config['screen'] == 'original' else engines
    t0 = time.perf_counter()
    log('{}: screening {} threshold values over {} early exit(s) ({})'.format(
        label, len(config['thresholds']), net.numexits() - 1, config['screen']))
    records, info = _screen(net, config, xs, ys, screen_engines, costs_['path_macs'], outputs)
    info['seconds'] = time.perf_counter() - t0
    n_cost = len(xs) if config['screen'] == 'original' else info['cost_samples']
    path, path_base_ms = fastest_path(net, screen_engines, xs[:n_cost], ys[:n_cost])
    notes = notes + ['Knee chosen with the {} path\'s times, the fastest baseline at batch '
                     'size 1 ({})'.format(path, ', '.join(
                         '{} {:.3g} ms'.format(p, ms) for p, ms in path_base_ms.items()))]
    log('{}: {}'.format(label, notes[-1]))
    accs = [r['acc'] for r in records]
    ms = [r['ms_' + path] for r in records]
    base_acc = float((net.predict_main(xs) == numpy.asarray(ys)).mean())
    chance = near_chance_note(base_acc, ys)
    if chance:
        notes = notes + [chance]
        log('{}: {}'.format(label, chance))
    choice = tradeoff.choose_knee(accs, ms, base_acc, path_base_ms[path])
    knee = choice['index']
    ts = records[knee]['thresholds']
    log('{}: {} T={}; timing it and the baseline at batch size 1 on {} samples: {} '
        'repeats of each, interleaved, on the {} path(s)'.format(
            label, 'knee' if choice['gain'] else choice['note'], ts, len(xs), repeats,
            ', '.join(engines)))
    timed = time_against_baseline(net, xs, ys, ts, engines, repeats)
    baseline, branchy = timed['chainer']
    rows = _table_rows(title, label, timed, costs_, notes)
    choice = knee_verdict(choice, rows[1], path)
    if not choice['gain']:
        rows[1]['Network'] += ' ({})'.format(choice['note'])
        log('{}: {}'.format(label, choice['note']))
    print(tables.format_table(rows), flush=True)
    knee_check = {'path': path, 'predicted_ms': records[knee]['ms_' + path],
                  'measured_ms': timed[path][1]['ms']}
    knee_check.update({'{}_ms_{}'.format(kind, p): value
                       for p in screen_engines for kind, value in (
                           ('predicted', records[knee]['ms_' + p]),
                           ('measured', timed[p][1]['ms']))})
    log('{}: knee time predicted {:.3f} ms, measured {:.3f} ms ({} path, median)'.format(
        label, knee_check['predicted_ms'], knee_check['measured_ms'], path))
    tag = '{}_{}'.format(name, label.lower())
    tables.write_table(os.path.join(out['results'], tag + '_table'), rows)
    runrecord.write_json(os.path.join(out['results'], tag + '_screen.json'), {
        'network': name, 'device': label, 'n_samples': len(xs), 'screening': info,
        'timing': {'repeats': repeats, 'warmup_samples': measurement.WARMUP_SAMPLES,
                   'paths': list(engines), 'notes': notes,
                   'order': 'per round: baseline then knee, on each path in turn'},
        'baseline': baseline, 'baseline_fast': timed.get('fast', (None,))[0],
        'baseline_numba': timed.get('numba', (None,))[0], 'knee_index': knee,
        'knee_path': path, 'knee_path_baseline_ms': path_base_ms,
        'knee_rule': 'fastest point (predicted time on the knee path, the path with the '
                     'fastest baseline) with accuracy >= baseline and predicted time <= '
                     'baseline time / 1.05; a gain when its slowest repeat on that path '
                     'beats the baseline\'s fastest',
        'knee_is_gain': choice['gain'], 'knee_note': choice['note'],
        'knee': branchy, 'knee_fast': timed.get('fast', (None, None))[1],
        'knee_numba': timed.get('numba', (None, None))[1], 'knee_check': knee_check,
        'mac_limit_gain': rows[1]['MAC limit'], 'points': records})
    star = knee if choice['gain'] else None  # no star for a point that is no knee
    extra = [{'label': '{} path'.format(p), 'accs': accs,
              'ms': [r['ms_' + p] for r in records],
              'base_acc': timed[p][0]['acc'], 'base_ms': timed[p][0]['ms'], 'knee': star}
             for p in screen_engines if p != path]
    visualize.plot_tradeoff_curve(
        accs, ms, timed[path][0]['acc'], timed[path][0]['ms'], star,
        title='{} on {}: accuracy vs runtime{}'.format(
            'B-' + title, label, '' if choice['gain'] else '\n' + choice['note']),
        path=os.path.join(out['figs'], tag + '_tradeoff'), extra_series=extra,
        series_label='{} path (knee)'.format(path))
    path_ms = info.get('path_ms', {}).get(path)
    if path_ms is None:  # the original way measured no per-exit costs
        path_ms = screening.path_costs(net, xs[:config['n_cost']])
    return rows, {'path_ms': path_ms, 'path': path, 'baseline': timed[path][0], 'xs': xs,
                  'ys': ys, 'engines': engines, 'notes': notes, 'repeats': repeats}


#: Seconds between the lines saying a numba compile is still going on.
COMPILE_HEARTBEAT = 15.0


def compile_numba_engine(net, name, label='CPU'):
    """``engines.numba.NumbaBranchyNet(net)`` with a line before it (what is being
    compiled, how long it took the last time), one every ``COMPILE_HEARTBEAT``
    seconds while it goes on, and one after (how long it took): the first
    compile of a network is tens of seconds with nothing else to show (a
    terminal also gets a bar per layer whose kernels are measured).
    Raises ``ImportError`` or ``engines.numba.NotCompilable`` as the engine does."""
    import threading
    from branchynet import progress
    from branchynet.engines import numba as numbapath
    done, start = threading.Event(), time.perf_counter()

    def heartbeat():
        while not done.wait(COMPILE_HEARTBEAT):
            if not progress.QUIET:
                log('{}: still compiling the numba engine of {} ({:.0f} s; measuring each '
                    'layer\'s kernels, then compiling the network; only the first time)'
                    .format(label, name, time.perf_counter() - start))
    beat = threading.Thread(target=heartbeat, daemon=True)
    with progress.timed_step(
            '{}: compiling the numba engine of {} (cached machine code makes it quick)'
            .format(label, name), 'numba compile: {}'.format(name),
            '{}: numba engine of {} ready'.format(label, name), log=log):
        beat.start()
        try:
            return numbapath.NumbaBranchyNet(net)
        finally:
            done.set()
            beat.join()


def balanced_head(y, n):
    """Indices (ascending) of ``n`` samples taken from the front of each class
    in turn: ``n // k`` of each of the ``k`` classes (one more of the
    first ``n % k`` classes by label), a class with too few samples leaving
    its share to the others. The presets' subsets (``--n-train``, ``--n-test``)
    are these, so they are class-balanced even where a dataset's first
    samples are not; with ``n >= len(y)`` every sample, in order."""
    y = numpy.asarray(y)
    if n >= len(y):
        return numpy.arange(len(y))
    classes = numpy.unique(y)
    members = [numpy.flatnonzero(y == c) for c in classes]
    rank = numpy.empty(len(y), numpy.int64)  # a sample's place within its class
    for idx in members:
        rank[idx] = numpy.arange(len(idx))
    label_order = numpy.searchsorted(classes, y)
    # round r takes the r-th sample of every class that has one, by label
    order = numpy.lexsort((label_order, rank))
    return numpy.sort(order[:n])


def split_validation(x_train, y_train, n_val, seed):
    """Hold out ``n_val`` training samples for calibration: a seeded split
    stratified by class (scikit-learn's ``train_test_split``), so the held-out
    class mix is the training set's. Where stratifying is impossible (fewer
    held-out samples than classes, or a class with one sample) the split is
    a plain seeded random choice.

    A hold-out larger than what is left to train on is refused, naming
    ``--n-val`` (its preset default may be meant for a larger dataset): a
    network trained on the smaller part would be measured, not the one asked for."""
    if not n_val:
        return x_train, y_train, None, None, []
    if n_val > len(x_train) - n_val:
        raise InvalidValue(
            '--n-val {0}: holding out {0} of the {1} training samples to calibrate '
            'thresholds would train on {2}, fewer than it holds out; give --n-val {3} or '
            'less (at most half the training set), or --n-val 0 (no calibrated row)'.format(
                n_val, len(x_train), max(len(x_train) - n_val, 0), len(x_train) // 2))
    index = numpy.arange(len(x_train))
    counts = numpy.bincount(y_train)
    counts = counts[counts > 0]
    stratify = y_train if (counts.min() >= 2 and len(counts) <= min(n_val, len(x_train) - n_val)) \
        else None
    rest, val = train_test_split(index, test_size=n_val, random_state=seed, stratify=stratify)
    val, rest = numpy.sort(val), numpy.sort(rest)
    return x_train[rest], y_train[rest], x_train[val], y_train[val], val.tolist()


def calibrate_and_compare(net, name, title, x_val, y_val, timing, label, out, costs_,
                          row_note=''):
    """Thresholds calibrated on the validation split, for every confidence measure.

    The target is the baseline's validation accuracy (the last exit's) and
    the cost the batch-1 time on the knee's path (``timing['path']``, the
    fastest; see ``time_and_screen``). The entropy choice is then
    measured for real on the test samples (the calibrated Table I row);
    every measure is compared on the test set from cached outputs.
    """
    xs, ys, path_ms = timing['xs'], timing['ys'], timing['path_ms']
    comparison, curves, rocs = [], {}, {}
    chosen = None
    val_logits, test_logits = net.get_logits(x_val), net.get_logits(xs)  # once for every measure
    for measure in confidence.MEASURES:
        val_scores, val_preds = screening.outputs_from_logits(val_logits, measure)
        cal = calibration.calibrate_thresholds(val_scores, val_preds, y_val, path_ms,
                                               measure=measure)
        test_scores, test_preds = screening.outputs_from_logits(test_logits, measure)
        on_test = screening.evaluate(test_scores, test_preds, ys, [cal['thresholds']],
                                     path_ms=path_ms, path_macs=costs_['path_macs'],
                                     measure=measure)
        comparison.append({
            'measure': measure, 'thresholds': cal['thresholds'], 'target_acc': cal['target_acc'],
            'val_acc': cal['acc'], 'val_ms': cal['cost'], 'met_on_val': cal['met'],
            'test_acc': float(on_test['acc'][0]), 'test_ms_predicted': float(on_test['ms'][0]),
            'test_macs': float(on_test['macs'][0]),
            'test_exit_pct': (100. * on_test['exit_counts'][0] / len(ys)).tolist(),
            'test_exit_auroc': calibration.exit_aurocs(test_scores, test_preds, ys)})
        rocs[measure] = calibration.exit_roc(test_scores, test_preds, ys)
        if measure == 'entropy':
            chosen = cal
        # accuracy/cost curve on the test set: quantile candidates of the test scores
        early = test_scores.shape[1] - 1
        grid = [numpy.quantile(test_scores[:, n], numpy.linspace(0, 1, 40 if early == 1 else 15))
                for n in range(early)]
        limits = numpy.array(list(itertools.product(*grid)))
        to_user = numpy.vectorize(confidence.get_measure(measure).limit)
        r = screening.evaluate(test_scores, test_preds, ys, to_user(limits), path_ms=path_ms,
                               measure=measure)
        curves[measure] = (r['acc'].tolist(), r['ms'].tolist())
    log('{}: timing the calibrated T={} and the baseline again ({} repeats, interleaved)'
        .format(label, chosen['thresholds'], timing['repeats']))
    timed = time_against_baseline(net, xs, ys, chosen['thresholds'], timing['engines'],
                                  timing['repeats'])
    row = _table_rows(title, label, timed, costs_, timing['notes'])[1]
    row['Network'] = 'B-{} (calibrated{})'.format(title, row_note)
    row['Notes'] = ['{} on {}: gains against the baseline timed again in its own rounds: {} '
                    'ms'.format(row['Network'], label, ', '.join(
                        '{} {}'.format(path, tables.format_cell('Time (ms)', tables.time_cell(b)))
                        for path, (b, _) in timed.items()))]
    measured = timed['chainer'][1]
    tag = '{}_{}'.format(name, label.lower())
    visualize.plot_measures(curves, timing['baseline']['acc'], timing['baseline']['ms'],
                            title='B-{}: confidence measures on the test set ({})'.format(
                                title, label),
                            path=os.path.join(out['figs'], tag + '_measures'))
    visualize.plot_exit_roc(rocs, title='B-{}: exit 1 decision on the test set ({})'.format(
        title, label), path=os.path.join(out['figs'], tag + '_exit_roc'))
    summary = {'calibrated': {'thresholds': chosen['thresholds'], 'val_acc': chosen['acc'],
                              'val_ms_predicted': chosen['cost'],
                              'test_acc': measured['acc'], 'test_ms': measured['ms'],
                              'test_ms_fast': timed.get('fast', (None, {}))[1].get('ms'),
                              'test_ms_numba': timed.get('numba', (None, {}))[1].get('ms'),
                              'test_exit_counts': measured['exit_counts'],
                              'cost_path': timing['path'],
                              'repeats': timing['repeats']},
               'timed': {path: {'baseline': b, 'calibrated': c}
                         for path, (b, c) in timed.items()},
               'measures': comparison}
    with atomic_write(os.path.join(out['results'], tag + '_calibration.md'), 'w') as f:
        f.write(tables.calibration_report(title, label, summary, len(y_val), len(ys)))
    return row, summary


#: The held-out row of a run without a validation split (``held_out_halves``).
HALVES_LABEL = 'held out: T chosen on one test half, measured on the other, both ways, averaged'


def test_halves(n):
    """The two fixed halves of ``n`` test samples: the even and the odd
    positions (interleaved, so a test set ordered by source or difficulty,
    as MNIST's is, splits evenly)."""
    index = numpy.arange(n)
    return index[0::2], index[1::2]


def pooled(parts):
    """One measurement of ``parts`` (``time_settings`` results on disjoint
    samples, each a ``(result, samples)`` pair) as if over all their samples:
    accuracy and exit counts over the union, and each timed pass the
    per-sample time over the union (pass i of every part together); no
    thresholds (each part had its own)."""
    n = sum(k for _, k in parts)
    out = {'acc': sum(r['acc'] * k for r, k in parts) / n,
           'exit_counts': [int(sum(c)) for c in zip(*(r['exit_counts'] for r, _ in parts))],
           'repeats': min(r['repeats'] for r, _ in parts)}
    for key in ('ms', 'trunk_ms'):
        if all(key + '_repeats' in r for r, _ in parts):
            values = [sum(r[key + '_repeats'][i] * k for r, k in parts) / n
                      for i in range(out['repeats'])]
            out.update({key: float(numpy.median(values)),
                        key + '_range': [min(values), max(values)], key + '_repeats': values})
    return out


def held_out_halves(net, title, timing, label, costs_):
    """The held-out row where no training image was held out (the paper
    preset trains on every one): thresholds chosen on one fixed half of the
    test samples (``test_halves``; the cheapest reaching that half's
    last-exit accuracy, from the knee path's per-exit costs, as
    ``calibrate_and_compare`` chooses on a validation split) and measured
    on the other, both ways; the row pools the two measurements
    (``pooled``), so every test sample is classified with thresholds chosen
    without it. Returns ``(row, summary)`` (no row for fewer than 2 samples)."""
    xs, ys, path_ms = timing['xs'], timing['ys'], timing['path_ms']
    if len(xs) < 2:
        log('{}: no held-out row: one test sample cannot be halved'.format(label))
        return None, {'skipped': 'fewer than 2 test samples'}
    halves = test_halves(len(xs))
    logits = net.get_logits(xs)
    chosen, timed = [], []
    for choose, measure in (halves, halves[::-1]):
        scores, preds = screening.outputs_from_logits([z[choose] for z in logits],
                                                      net.confidence)
        cal = calibration.calibrate_thresholds(scores, preds, ys[choose], path_ms,
                                               measure=net.confidence)
        chosen.append(cal)
        log('{}: held-out row: T={} chosen on {} test samples, timed on the other {}'.format(
            label, cal['thresholds'], len(choose), len(measure)))
        timed.append(time_against_baseline(net, xs[measure], ys[measure], cal['thresholds'],
                                           timing['engines'], timing['repeats']))
    sizes = [len(halves[1]), len(halves[0])]  # the samples each measurement ran on
    together = {path: tuple(pooled([(t[path][i], k) for t, k in zip(timed, sizes)])
                            for i in (0, 1)) for path in timed[0]}
    row = _table_rows(title, label, together, costs_, timing['notes'])[1]
    row['Network'] = 'B-{} ({})'.format(title, HALVES_LABEL)
    row['Thrshld. T'] = None
    row['Notes'] = ['{} on {}: T {} chosen on the even test samples (measured on the odd), '
                    '{} on the odd (measured on the even), each the cheapest reaching its '
                    'half\'s last-exit accuracy; times and gains pool both measurements, each '
                    'against the baseline timed in its own rounds'.format(
                        row['Network'], label, *(', '.join('{:.4g}'.format(t)
                                                           for t in c['thresholds'])
                                                 for c in chosen))]
    summary = {'rule': HALVES_LABEL, 'halves': 'even and odd test sample positions',
               'chosen': [{'on': half, 'thresholds': c['thresholds'], 'acc_on_choosing_half':
                           c['acc'], 'target_acc': c['target_acc'], 'met': c['met']}
                          for half, c in zip(('even', 'odd'), chosen)],
               'acc': together['chainer'][1]['acc'],
               'exit_counts': together['chainer'][1]['exit_counts'],
               'timed': {path: {'baseline': b, 'held_out': h}
                         for path, (b, h) in together.items()}}
    return row, summary
