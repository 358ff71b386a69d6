"""The experiment driver: one network, end to end, as the original notebooks ran it.

    python -m branchynet.experiment --network lenet_mnist --preset fast

Steps: load data, build the network, train the main network alone, train
all exits jointly from those weights, time the baseline and BranchyNet at
batch size 1, screen the threshold grid on the test set (the paper's way),
pick the knee, write Table I, every screened point, figures and models.

Every network is configured by the ``EXPERIMENT`` dict of its module in
``networks/``; nothing here is specific to one network.
"""
import argparse
import contextlib
import io
import itertools
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer
import numpy
from sklearn.model_selection import train_test_split

import networks
from datasets import DataUnavailableError

from branchynet import (calibration, checkpoint, confidence, costs, fileio, measurement,
                        report, runrecord, runtime, screening, tables, tradeoff, training,
                        visualize)
from branchynet.devices import DEVICE_CHOICES, device_label, gpu_usable, resolve_device
from branchynet.fastpath import FastBranchyNet
from branchynet.fileio import atomic_write, save_dill, save_npz
from branchynet.validation import InputError, InvalidValue, validate_count

DATASETS = ('mnist', 'cifar10', 'pcifar10', 'mnist32')


def log(msg):
    print('[{}] {}'.format(time.strftime('%H:%M:%S'), msg), flush=True)


def resolve_config(network, preset, overrides=None):
    """The experiment settings of ``network`` under ``preset``, with overrides."""
    module = networks.load(network)
    base = dict(module.EXPERIMENT)
    presets = base.pop('presets')
    if preset not in presets:
        raise InvalidValue('unknown preset {!r} for {}; expected one of: {}'.format(
            preset, network, ', '.join(presets)))
    config = {'network': network, 'preset': preset, 'n_train': None, 'n_test': None,
              'n_timing': None, 'num_classes': 10, 'dataset_path': None, 'augment': False,
              'screen': 'cached', 'n_cost': 200, 'n_val': 5000}
    config.update(base)
    config.update(presets[preset])
    for key, value in (overrides or {}).items():
        if value is not None:
            config[key] = value
    return module, config


def load_dataset(config, dataset_module=None):
    """Load the configured dataset and cut the subsets the preset asks for.

    ``config['dataset_path']`` (``--dataset``) replaces the network's default
    dataset: an npz file in the ``train_x, train_y, test_x, test_y`` layout,
    or the name of a module in ``datasets/`` (e.g. ``mnist32``).
    """
    import importlib
    source = config.get('dataset_path')
    if source and source.endswith('.npz'):
        from datasets import npz
        x_train, y_train, x_test, y_test = npz.load(source, num_classes=config['num_classes'])
    else:
        name = source or config['dataset']
        if dataset_module is None:
            if name not in DATASETS:
                raise InvalidValue('unknown dataset {!r}; expected a .npz file or one of: {}'
                                 .format(name, ', '.join(DATASETS)))
            dataset_module = importlib.import_module('datasets.' + name)
        x_train, y_train, x_test, y_test = dataset_module.get_data()
    if config.get('n_train'):
        x_train, y_train = x_train[:config['n_train']], y_train[:config['n_train']]
    if config.get('n_test'):
        x_test, y_test = x_test[:config['n_test']], y_test[:config['n_test']]
    return x_train, y_train, x_test, y_test


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


def time_and_screen(net, name, title, config, x_test, y_test, label, out, costs_,
                    outputs=None):
    """Batch-1 baseline, grid screening and the knee on the current device.

    The knee is the fastest point (Chainer-path time) whose accuracy is at
    least the baseline's and which is faster than the baseline beyond noise
    (``tradeoff.choose_knee``); it is then measured for real at batch size 1 on
    both paths. Without such a point, or when the knee measures no faster
    than the baseline, the table and the figure say so. Writes the Table I
    block, every point (JSON) and Fig. 3.
    """
    n_timing = config.get('n_timing') or len(x_test)
    xs, ys = x_test[:n_timing], y_test[:n_timing]
    fast = FastBranchyNet(net)
    engines = {'chainer': net, 'fast': fast}
    log('{}: timing the baseline at batch size 1 on {} samples (Chainer and fast path)'
        .format(label, len(xs)))
    baseline = measurement.measure_main(net, xs, ys)
    baseline_fast = measurement.measure_main(net, xs, ys, engine=fast, trunk_only=False)
    log('{}: baseline acc {:.2%}, {:.3f} ms/sample end to end ({:.3f} trunk only, {:.3f} '
        'fast path)'.format(label, baseline['acc'], baseline['ms'], baseline['trunk_ms'],
                            baseline_fast['ms']))
    t0 = time.perf_counter()
    log('{}: screening {} threshold values over {} early exit(s) ({})'.format(
        label, len(config['thresholds']), net.numexits() - 1, config['screen']))
    records, info = _screen(net, config, xs, ys, engines, costs_['path_macs'], outputs)
    info['seconds'] = time.perf_counter() - t0
    accs = [r['acc'] for r in records]
    ms = [r['ms_chainer'] for r in records]
    choice = tradeoff.choose_knee(accs, ms, baseline['acc'], baseline['ms'])
    knee = choice['index']
    ts = records[knee]['thresholds']
    log('{}: {} T={}; measuring it at batch size 1'.format(
        label, 'knee' if choice['gain'] else choice['note'], ts))
    branchy = measurement.measure_branchy(net, xs, ys, ts)
    branchy_fast = measurement.measure_branchy(net, xs, ys, ts, engine=fast, trunk_only=False)
    if choice['gain'] and branchy['ms'] >= baseline['ms']:
        choice = {'index': knee, 'gain': False, 'note': '{}; measured {:.3f} vs {:.3f} ms'
                  .format(tradeoff.NO_GAIN, branchy['ms'], baseline['ms'])}
    limit = costs.arithmetic_limit_gain(costs_, branchy['exit_counts'])
    rows = tables.branchy_table_rows(title, baseline, branchy, device=label, printout=False,
                                     baseline_fast=baseline_fast, branchy_fast=branchy_fast,
                                     mac_limit=limit)
    if not choice['gain']:
        rows[1]['Network'] += ' ({})'.format(choice['note'])
        log('{}: {}'.format(label, choice['note']))
    print(tables.format_table(rows), flush=True)
    knee_check = {'predicted_ms_chainer': records[knee]['ms_chainer'],
                  'measured_ms_chainer': branchy['ms'],
                  'predicted_ms_fast': records[knee].get('ms_fast'),
                  'measured_ms_fast': branchy_fast['ms']}
    log('{}: knee time predicted {:.3f} ms, measured {:.3f} ms (Chainer)'.format(
        label, knee_check['predicted_ms_chainer'], branchy['ms']))
    tag = '{}_{}'.format(name, label.lower())
    tables.write_table(os.path.join(out['results'], tag + '_table'), rows)
    runrecord.write_json(os.path.join(out['results'], tag + '_screen.json'), {
        'network': name, 'device': label, 'n_samples': len(xs), 'screening': info,
        'baseline': baseline, 'baseline_fast': baseline_fast, 'knee_index': knee,
        'knee_rule': 'fastest point (Chainer-path time) with accuracy >= baseline and '
                     'predicted time <= baseline time / 1.05',
        'knee_is_gain': choice['gain'], 'knee_note': choice['note'],
        'knee': branchy, 'knee_fast': branchy_fast, 'knee_check': knee_check,
        'mac_limit_gain': limit, 'points': records})
    star = knee if choice['gain'] else None  # no star for a point that is no knee
    extra = []
    if 'ms_fast' in records[0]:
        extra.append({'label': 'fast path', 'accs': accs,
                      'ms': [r['ms_fast'] for r in records],
                      'base_acc': baseline_fast['acc'], 'base_ms': baseline_fast['ms'],
                      'knee': star})
    visualize.plot_tradeoff_curve(
        accs, ms, baseline['acc'], baseline['ms'], star,
        title='{} on {}: accuracy vs runtime{}'.format(
            'B-' + title, label, '' if choice['gain'] else '\n' + tradeoff.NO_GAIN),
        path=os.path.join(out['figs'], tag + '_tradeoff'), extra_series=extra,
        series_label='Chainer path')
    path_ms = info.get('path_ms', {}).get('chainer')
    if path_ms is None:  # the original way measured no per-exit costs
        path_ms = screening.path_costs(net, xs[:config['n_cost']])
    return rows, {'path_ms': path_ms, 'baseline': baseline, 'baseline_fast': baseline_fast,
                  'xs': xs, 'ys': ys, 'fast': fast}


def split_validation(x_train, y_train, n_val, seed):
    """Hold out ``n_val`` training samples for calibration: a seeded split
    stratified by class (scikit-learn's ``train_test_split``), so the held-out
    class mix is the training set's. Where stratifying is impossible (fewer
    held-out samples than classes, or a class with one sample) the split is
    a plain seeded random choice."""
    if not n_val:
        return x_train, y_train, None, None, []
    if n_val >= len(x_train):
        raise InvalidValue('n_val ({}) must be smaller than the training set ({})'.format(
            n_val, len(x_train)))
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
    the cost the Chainer path's batch-1 time. The entropy choice is then
    measured for real on the test samples (the calibrated Table I row);
    every measure is compared on the test set from cached outputs.
    """
    xs, ys, path_ms = timing['xs'], timing['ys'], timing['path_ms']
    comparison, curves, rocs = [], {}, {}
    chosen = None
    for measure in confidence.MEASURES:
        val_scores, val_preds = screening.exit_outputs(net, x_val, measure)
        cal = calibration.calibrate_thresholds(val_scores, val_preds, y_val, path_ms,
                                               measure=measure)
        test_scores, test_preds = screening.exit_outputs(net, xs, measure)
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
    measured = measurement.measure_branchy(net, xs, ys, chosen['thresholds'])
    measured_fast = measurement.measure_branchy(net, xs, ys, chosen['thresholds'],
                                          engine=timing['fast'], trunk_only=False)
    row = {'Device': label, 'Network': 'B-{} (calibrated{})'.format(title, row_note),
           'Acc. (%)': 100 * measured['acc'], 'Time (ms)': measured['ms'],
           'Gain': timing['baseline']['ms'] / measured['ms'],
           'Trunk-only (ms)': measured['trunk_ms'],
           'Trunk-only gain': timing['baseline']['trunk_ms'] / measured['trunk_ms'],
           'Fast (ms)': measured_fast['ms'],
           'Fast gain': timing['baseline_fast']['ms'] / measured_fast['ms'],
           'MAC limit': costs.arithmetic_limit_gain(costs_, measured['exit_counts']),
           'Thrshld. T': chosen['thresholds'],
           'Exit (%)': [100. * c / len(ys) for c in measured['exit_counts']]}
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
                              'test_ms_fast': measured_fast['ms'],
                              'test_exit_counts': measured['exit_counts']},
               'measures': comparison}
    with atomic_write(os.path.join(out['results'], tag + '_calibration.md'), 'w') as f:
        f.write(tables.calibration_report(title, label, summary, len(y_val), len(ys)))
    return row, summary


#: Counts of the configuration and the least each accepts.
COUNT_MINIMUMS = {'n_train': 1, 'n_test': 1, 'n_timing': 1, 'n_val': 0, 'n_cost': 1,
                  'epochs_main': 0, 'epochs_joint': 0, 'batchsize': 1}


def check_config(config):
    """Refuse counts that are not integers or below their minimum (``--n-train 0``
    would otherwise mean "all", ``-5`` "all but five")."""
    for key, minimum in COUNT_MINIMUMS.items():
        validate_count(config.get(key), '--' + key.replace('_', '-'), minimum)


def output_folders(out_dir):
    """The paths of the ``_models``/``_figs``/``_results`` folders of ``out_dir``."""
    return {k: os.path.join(out_dir, '_' + k) for k in ('models', 'figs', 'results')}


def prepare_out(out_dir):
    """The ``_models``/``_figs``/``_results`` folders of ``out_dir``, checked.

    Fails with a clear error before any training when they could not be
    made (``--out`` under a file, no permission); nothing is created here.
    """
    out = output_folders(out_dir)
    for folder in [out_dir] + list(out.values()):
        existing = os.path.abspath(folder)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise InvalidValue('--out {}: cannot create the folder {}: {} is a file '
                               '(Not a directory)'.format(out_dir, folder, existing))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InvalidValue('--out {}: the folder {} is not writable'.format(
                out_dir, existing))
    return out


def create_out(out):
    """Make the output folders checked by ``prepare_out``."""
    for folder in out.values():
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise InvalidValue('cannot create the folder {}: {}'.format(
                folder, e.strerror or e)) from e


def run(network, preset='fast', device='cpu', out_dir='.', seed=0, overrides=None,
        dataset_module=None, time_devices=None, init=None, resume=False, distributed=None):
    """Run the whole experiment; returns a dict of what was measured.

    ``distributed`` (a ``branchynet.distributed.Distributed``, every rank
    calling ``run``): training is data-parallel, the test set's exit outputs
    are computed on every rank's shard and gathered; batch-1 timing, the
    calibration and everything under ``out_dir`` (the lock included) are
    rank 0's alone, which alone returns the results (the others return None).

    ``init`` names an npz of weights (``_models/<net>.npz``) to start from,
    e.g. to continue training or, with 0 epochs, only to time and screen.
    Training snapshots go to ``_models/<net>.{main,joint}.snapshot.npz`` at
    every epoch end (and on SIGINT/SIGTERM); ``resume`` continues from them.

    Settings, devices and the output folder are checked before any work;
    the run holds a lock on ``out_dir`` (a second run there is refused) and
    first deletes temporaries that killed runs left there.
    """
    dist = distributed
    root = dist is None or dist.is_root
    with contextlib.ExitStack() as held:
        with _agreed(dist):
            module, config = resolve_config(network, preset, overrides)
            check_config(config)
            validate_count(seed, '--seed', 0)
            if dist is not None and config['augment']:
                raise InvalidValue('--augment is not supported with --distributed (the '
                                   'augmented batches are drawn per process, not shared by ranks)')
            dev = resolve_device(device)
            for td in time_devices or ():
                resolve_device(td)
            if dist is not None and dev.xp is not numpy:  # one GPU per rank of a node
                dev = chainer.get_device('@cupy:{}'.format(dist.comm.intra_rank))
            out = prepare_out(out_dir) if root else output_folders(out_dir)
            if root:  # the other ranks never touch out_dir
                held.enter_context(fileio.RunLock(out_dir))
                for folder in [out_dir] + list(out.values()):
                    removed = fileio.remove_stale_temporaries(folder)
                    if removed:
                        log('removed {} temporary file(s) left in {} by an interrupted run'
                            .format(len(removed), folder))
        return _run_locked(module, config, network, preset, dev, out, seed, dataset_module,
                           time_devices, init, resume, dist)


def _agreed(dist, kinds=(InputError, DataUnavailableError, OSError)):
    """``dist.agreed``: with MPI ranks, an error on one ends every rank's run
    the same way (see ``distributed.Distributed.agreed``); alone, nothing."""
    return contextlib.nullcontext() if dist is None else dist.agreed(kinds)


def _run_locked(module, config, network, preset, dev, out, seed, dataset_module,
                time_devices, init, resume, dist):
    title = config['title']
    root = dist is None or dist.is_root
    numpy.random.seed(seed)
    if dev.xp is not numpy:
        dev.xp.random.seed(seed)

    log('code: commit {}, chainer {}, numpy {}, python {}'.format(
        runrecord.source_commit(), chainer.__version__, numpy.__version__,
        platform.python_version()))
    log('{} ({} preset): loading {}'.format(network, preset,
                                           config.get('dataset_path') or config['dataset']))
    with _agreed(dist):  # every rank loads the data itself; all skip, or none
        x_train, y_train, x_test, y_test = load_dataset(config, dataset_module)
        if root:
            create_out(out)
    x_train, y_train, x_val, y_val, val_idx = split_validation(
        x_train, y_train, config['n_val'], seed)
    log('train {} samples, validation {}, test {}'.format(
        len(x_train), 0 if x_val is None else len(x_val), len(x_test)))

    chainer.global_config.cudnn_deterministic = True
    net = module.get_network()
    if init:
        with _agreed(dist):
            if root:  # the other ranks get these weights in train_exits' broadcast
                fileio.load_npz(init, net)
        log('initialised from {}'.format(init))
    net.to_device(dev)
    dev.use()

    log('training the main network: {} epochs, batch {}'.format(
        config['epochs_main'], config['batchsize']))
    main_snapshot = os.path.join(out['models'], network + '.main.snapshot.npz')
    joint_snapshot = os.path.join(out['models'], network + '.joint.snapshot.npz')
    if root and not (resume and checkpoint.exists(main_snapshot)) and \
            checkpoint.exists(joint_snapshot):
        os.unlink(joint_snapshot)  # it continued an older main phase
        log('a fresh main phase: removed the older joint snapshot {}'.format(joint_snapshot))
    settings = {'network': network, 'dataset': config.get('dataset_path') or config['dataset'],
                'n_train': len(x_train), 'n_val': len(val_idx), 'run_seed': seed,
                'epochs_main': config['epochs_main'], 'epochs_joint': config['epochs_joint']}
    main_losses, main_accs, main_s = training.train_exits(
        net, x_train, y_train, main=True, batchsize=config['batchsize'],
        num_epoch=config['epochs_main'], seed=seed, augment=config['augment'],
        snapshot=main_snapshot, resume=resume, settings=settings, distributed=dist)
    if dist is None:
        base_test_acc, _ = net.test_main(x_test, y_test, batchsize=1000)
    else:
        base_test_acc = float((dist.predict_main(net, x_test) == y_test).mean())
    log('main network: test accuracy {:.2%} ({:.1f} s)'.format(base_test_acc, main_s))

    log('joint training of all {} exits: {} epochs'.format(
        net.numexits(), config['epochs_joint']))
    joint_losses, joint_accs, joint_s = training.train_exits(
        net, x_train, y_train, main=False, batchsize=config['batchsize'],
        num_epoch=config['epochs_joint'], seed=seed + 1, augment=config['augment'],
        snapshot=joint_snapshot, resume=resume, settings=settings, distributed=dist)
    sms = net.get_SM(x_test) if dist is None else dist.get_SM(net, x_test)
    exit_accs = exit_accuracies(net, x_test, y_test, sms)
    log('joint: test accuracy per exit {} ({:.1f} s)'.format(
        ', '.join('{:.2%}'.format(a) for a in exit_accs), joint_s))

    outputs = None
    if dist is not None:
        if config['screen'] == 'cached':
            outputs = dist.exit_outputs(net, x_test[:config.get('n_timing') or len(x_test)])
        if not root:  # the rest (timing, writing) is rank 0's alone
            dist.wait_for_root()
            return None

    last = net.numexits() - 1
    curves_l = [[float('nan')] * last + row for row in main_losses] + joint_losses
    curves_a = [[float('nan')] * last + row for row in main_accs] + joint_accs
    if curves_l:
        visualize.plot_training(curves_l, curves_a, title='B-{}: training per exit'.format(title),
                              path=os.path.join(out['figs'], network + '_training'),
                              phase_labels=[(0, 'main only')] * bool(main_losses) +
                              [(len(main_losses), 'joint')] * bool(joint_losses))
    visualize.plot_entropy_sweep(sms, y_test, title='B-{}: early exit vs entropy '
                                 'threshold (test set)'.format(title),
                                 path=os.path.join(out['figs'], network + '_entropy'))

    save_dill(os.path.join(out['models'], network + '.bn'), net)
    save_npz(os.path.join(out['models'], network + '.npz'), net)
    log('saved {0}/{1}.bn (dill) and {0}/{1}.npz (weights)'.format(out['models'], network))

    results = {'network': network, 'title': title, 'config': config,
               'environment': runrecord.environment(config, dev), 'seed': seed, 'init': init,
               'data': {'n_train': len(x_train), 'n_test': len(x_test),
                        'n_val': len(val_idx), 'val_indices': val_idx,
                        'n_timing': min(config.get('n_timing') or len(x_test), len(x_test))},
               'training': {'main_loss': main_losses, 'main_acc': main_accs,
                            'main_seconds': main_s, 'joint_loss': joint_losses,
                            'joint_acc': joint_accs, 'joint_seconds': joint_s,
                            'epoch_seconds_main': main_s / max(1, config['epochs_main']),
                            'epoch_seconds_joint': joint_s / max(1, config['epochs_joint'])},
               'test': {'baseline_acc': base_test_acc, 'exit_accs_after_joint': exit_accs},
               'tables': {}, 'costs': costs.exit_costs(net)}
    if time_devices is None:
        time_devices = ['cpu'] + (['gpu'] if gpu_usable() else [])
    for td in time_devices:
        tdev = resolve_device(td)
        net.to_device(tdev)
        tdev.use()
        label = device_label(tdev)
        rows, timing = time_and_screen(net, network, title, config, x_test, y_test, label,
                                       out, results['costs'], outputs)
        if x_val is not None:
            log('{}: calibrating thresholds on {} validation samples'.format(label, len(x_val)))
            # The paper's schedule trains on every training image; holding some
            # out for calibration (opt-in there) is then said in the row.
            note = '; trained on {:,} of {:,} images'.format(
                len(x_train), len(x_train) + len(x_val)) if preset == 'paper' else ''
            row, summary = calibrate_and_compare(net, network, title, x_val, y_val, timing,
                                                 label, out, results['costs'], row_note=note)
            rows.append(row)
            results.setdefault('calibration', {})[label] = summary
            print(tables.format_table(rows), flush=True)
            tables.write_table(os.path.join(out['results'], '{}_{}_table'.format(
                network, label.lower())), rows)
        results['tables'][label] = rows
    net.to_device(dev)
    if dist is not None:
        results['distributed'] = {
            'ranks': dist.size, 'communicator': dist.communicator_name,
            'global_batch': config['batchsize'],
            'comm_seconds_rank0': dist.comm_seconds,
            'timing': 'batch-1 timing and calibration ran on rank 0 alone'}
    runrecord.write_json(os.path.join(out['results'], network + '_results.json'), results)
    log('done: results in {}, figures in {}'.format(out['results'], out['figs']))
    if dist is not None:
        dist.wait_for_root()
    return results


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m branchynet.experiment', allow_abbrev=False,
        description='Train, time and screen BranchyNet networks (Table I and Fig. 3). '
                    './get_results.sh runs this with --networks all --device auto --out . '
                    'after setting up the environment.')
    parser.add_argument('--network', default=None, choices=networks.NETWORKS,
                        help='one network (default lenet_mnist)')
    parser.add_argument('--networks', metavar='LIST',
                        help='comma-separated networks, or all ({}): each is run in turn '
                             'with its output also in <out>/_results/<network>.log, then '
                             'Table I of those that produced results goes to '
                             '<out>/_results/table1.md; a network whose data cannot be had '
                             'is skipped with a line saying how to provide it'.format(
                                 ', '.join(networks.NETWORKS)))
    parser.add_argument('--preset', default='fast',
                        help="schedule: 'paper' (the original's), 'fast' (default) or 'tiny' "
                             '(seconds, a data subset)')
    parser.add_argument('--paper', dest='preset', action='store_const', const='paper',
                        help="the original's schedules on every training image (--preset "
                             'paper; LeNet 50 + 100 epochs: about 2 h on a 2-core CPU)')
    parser.add_argument('--device', default='cpu',
                        help='training device: {} (default cpu; auto: a GPU when CuPy sees '
                             'one)'.format(', '.join(DEVICE_CHOICES)))
    parser.add_argument('--time-devices', default=None,
                        help='comma-separated devices to time on (default: cpu, and with '
                             '--device gpu or auto the GPU too when it is usable)')
    parser.add_argument('--out', default='.', help='folder holding _models, _figs, _results')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--epochs-main', type=int, help='override the preset')
    parser.add_argument('--epochs-joint', type=int, help='override the preset')
    parser.add_argument('--batchsize', type=int, help='override the preset')
    parser.add_argument('--n-train', type=int, help='use the first N training samples')
    parser.add_argument('--n-test', type=int, help='use the first N test samples')
    parser.add_argument('--n-timing', type=int,
                        help='time and screen on the first N test samples (default all)')
    parser.add_argument('--dataset', dest='dataset_path', metavar='FILE.npz|NAME',
                        help="replace the network's dataset: an npz file (train_x, train_y, "
                             'test_x, test_y) or one of: ' + ', '.join(DATASETS))
    parser.add_argument('--screen', choices=('cached', 'original'),
                        help='cached (default): grid from exit outputs computed once; '
                             'original: one batch-1 pass per grid point')
    parser.add_argument('--n-val', type=int,
                        help='training samples held out to calibrate thresholds (default '
                             '5000, but 0 with the paper preset, which trains on every '
                             'training image; 0: paper-faithful test-set sweep only)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from the training snapshots in _models/')
    parser.add_argument('--init', metavar='FILE.npz',
                        help='start from these weights (continue training, or time only '
                             'with --epochs-main 0 --epochs-joint 0)')
    parser.add_argument('--augment', action='store_true', default=None,
                        help='train on augmented images (crops, flips; off by default)')
    parser.add_argument('--distributed', action='store_true',
                        help='data-parallel over the MPI ranks this was started with '
                             '(mpiexec -n N python -m branchynet.experiment --distributed); '
                             '--batchsize stays the global batch')
    parser.add_argument('--communicator', default=None,
                        help='ChainerMN communicator with --distributed: on CPU packed '
                             "(default: one all-reduce per step) or naive (ChainerMN's, one per "
                             'parameter); on GPUs pure_nccl (default), flat or naive')
    parser.add_argument('--mpi', type=int, metavar='N',
                        help='start this run on N MPI ranks: mpiexec -n N ... --distributed '
                             '(needs requirements/mpi.txt; MPIEXEC overrides the launcher)')
    parser.add_argument('--hostfile', metavar='FILE',
                        help='with --mpi: the MPI hostfile listing the nodes (several machines)')
    return parser


def network_list(args):
    """The networks to run: ``--networks`` (a comma-separated list or ``all``)
    or ``--network`` (default lenet_mnist)."""
    if args.networks is None:
        return [args.network or 'lenet_mnist']
    if args.network is not None:
        raise InvalidValue('give --network or --networks, not both')
    if args.networks.strip() == 'all':
        return list(networks.NETWORKS)
    names = [n.strip() for n in args.networks.split(',') if n.strip()]
    expected = 'expected a comma-separated list of: {} (or all)'.format(
        ', '.join(networks.NETWORKS))
    for name in names:
        if name not in networks.NETWORKS:
            raise InvalidValue('unknown network {!r} in --networks; {}'.format(name, expected))
    if not names:
        raise InvalidValue('--networks {!r} names no network; {}'.format(args.networks, expected))
    return names


def mpi_command(args, argv):
    """``mpiexec -n N [-hostfile F] python -m branchynet.experiment --distributed ...``:
    this command line with ``--mpi``/``--hostfile`` turned into the launcher's."""
    if args.mpi < 1:
        raise InvalidValue('--mpi needs a positive number of ranks, got {}'.format(args.mpi))
    if args.distributed:
        raise InvalidValue('--mpi starts the ranks itself; --distributed is for a command '
                           'already started by mpiexec')
    if args.hostfile is not None and not os.path.isfile(args.hostfile):
        raise InvalidValue('--hostfile {!r} is not a file; expected an MPI hostfile (one '
                           'host:slots per line)'.format(args.hostfile))
    launcher = os.environ.get('MPIEXEC') or os.path.join(os.path.dirname(sys.executable),
                                                          'mpiexec')
    if not os.path.exists(launcher):
        launcher = shutil.which('mpiexec')
    if not launcher:
        raise InvalidValue('mpiexec not found: install requirements/mpi.txt into this '
                           'environment (./get_results.sh --mpi N does) or set MPIEXEC')
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ('--mpi', '--hostfile'):
            skip = True
        elif not a.startswith(('--mpi=', '--hostfile=')):
            rest.append(a)
    command = [launcher, '-n', str(args.mpi)]
    if args.hostfile is not None:
        command += ['-hostfile', args.hostfile]  # MPICH and Open MPI both take -hostfile
    return command + [sys.executable, '-m', 'branchynet.experiment', '--distributed'] + rest


class _Tee(io.TextIOBase):
    """Writes to a stream and to a log file (the per-network logs)."""

    def __init__(self, stream, log_file):
        self.stream, self.log_file = stream, log_file

    def write(self, text):
        self.stream.write(text)
        self.log_file.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log_file.flush()


@contextlib.contextmanager
def _logged(path, append):
    with open(path, 'a' if append else 'w') as log_file:
        with contextlib.redirect_stdout(_Tee(sys.stdout, log_file)), \
                contextlib.redirect_stderr(_Tee(sys.stderr, log_file)):
            yield


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        names = network_list(args)
        if args.hostfile is not None and args.mpi is None:
            raise InvalidValue('--hostfile needs --mpi N')
        if args.mpi is not None:
            command = mpi_command(args, argv)
    except InputError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    if args.mpi is not None:
        print('starting: {}'.format(' '.join(command)), flush=True)
        return subprocess.call(command)
    runtime.tune_allocator()
    overrides = {k: getattr(args, k) for k in
                 ('epochs_main', 'epochs_joint', 'batchsize', 'n_train', 'n_test', 'n_timing',
                  'dataset_path', 'augment', 'screen', 'n_val')}
    if args.time_devices:
        time_devices = args.time_devices.split(',')
    else:  # training on the CPU times on the CPU; gpu/auto add the GPU when usable
        time_devices = ['cpu'] if args.device == 'cpu' else None
    if args.communicator and not args.distributed:
        print('error: --communicator needs --distributed', file=sys.stderr)
        return 2
    if not args.distributed:
        return _run_networks(args, names, overrides, time_devices, None)
    from branchynet import distributed
    try:
        dist = distributed.Distributed.create(
            args.communicator, gpu=resolve_device(args.device).xp is not numpy)
    except (distributed.MPIUnavailable, InputError) as e:  # every rank, before any collective
        if distributed.world_rank() == 0:
            print('error: {}'.format(e), file=sys.stderr)
        return 2
    dist.silence_others()
    with distributed.abort_on_error(dist, keep=(checkpoint.TrainingInterrupted,)):
        return _run_networks(args, names, overrides, time_devices, dist)


def _run_networks(args, names, overrides, time_devices, dist):
    """One network as asked (``--network``), or each of ``--networks`` in turn
    with its log, then Table I of those that wrote results in this run.
    Exit status: 130 if interrupted, else 2 if a network's input was bad, 1
    if one failed otherwise, 0."""
    if args.networks is None:
        return _run_main(args, names[0], overrides, time_devices, dist)
    root = dist is None or dist.is_root
    results = os.path.join(args.out, '_results')
    if root:
        try:
            os.makedirs(results, exist_ok=True)
        except OSError as e:
            print('error: cannot create {}: {}'.format(results, e.strerror or e),
                  file=sys.stderr)
            return 2
    start = time.time()
    codes, produced = {}, []
    for name in names:
        logging = _logged(os.path.join(results, name + '.log'), args.resume) if root \
            else contextlib.nullcontext()
        with logging:
            if root:
                print('=== {} ({} preset, device {}{})'.format(
                    name, args.preset, args.device,
                    '' if dist is None else ', {} MPI ranks'.format(dist.size)), flush=True)
            try:
                codes[name] = _run_main(args, name, overrides, time_devices, dist)
            except Exception:  # a bug in one network's run: reported, the others still run
                if dist is not None:
                    raise  # distributed.abort_on_error ends every rank
                traceback.print_exc()
                codes[name] = 1
        path = os.path.join(results, name + '_results.json')
        if codes[name] == 0 and os.path.exists(path) and os.path.getmtime(path) >= start:
            produced.append(name)  # a skipped network writes no results
        if codes[name] == 130:
            break
    if root:
        print('=== finished in {:.0f} s'.format(time.time() - start), flush=True)
        if produced:  # Table I of this run's networks only, never older runs' results
            report.main(['--results', results, '--networks', ','.join(produced)])
        else:
            print('no network produced results: {} left as it was'.format(
                os.path.join(results, 'table1.md')), file=sys.stderr)
        failed = [n for n, c in codes.items() if c != 0]
        if failed:
            print('error: failed: {} (see {})'.format(
                ', '.join(failed), os.path.join(results, '<network>.log')), file=sys.stderr)
    for code in (130, 2, 1):
        if code in codes.values():
            return code
    return 0


def _run_main(args, network, overrides, time_devices, dist):
    """``run`` with its errors as messages and exit codes. With MPI ranks, an
    error every rank raised together (an interruption, a refused input, data
    no rank could load) is reported by rank 0 alone; any other error of a
    rank propagates to ``distributed.abort_on_error``, which ends the job."""
    speak = dist is None or dist.is_root

    def together(e):
        return dist is None or getattr(e, 'all_ranks', False)
    try:
        run(network, args.preset, args.device, args.out, args.seed, overrides,
            time_devices=time_devices, init=args.init, resume=args.resume, distributed=dist)
    except checkpoint.TrainingInterrupted as e:
        if speak:  # with ranks, every rank stops at the same batch
            print(str(e), file=sys.stderr)
        return 130
    except DataUnavailableError as e:
        if not together(e):
            raise
        if speak:
            print('skipped {}: {}'.format(network, e), file=sys.stderr)
        return 0
    except (InputError, FileNotFoundError) as e:  # bad input; anything else is a bug
        if not together(e):
            raise
        if speak:
            print('error: {}'.format(e), file=sys.stderr)
        return 2
    except OSError as e:  # the environment: a full disk, no permission
        if not together(e):
            raise
        if speak:
            print('error: {}{}'.format(e.strerror or e, ': {}'.format(e.filename)
                                       if e.filename else ''), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
